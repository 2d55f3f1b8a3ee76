package state

// schemaSteps are applied in order; refit.meta.version records how many ran.
// Never edit a released step: append a new one.
var schemaSteps = []string{
	`CREATE TABLE refit.jobs (
		id               bigserial PRIMARY KEY,
		name             text NOT NULL,
		checksum         text NOT NULL,
		file             text NOT NULL DEFAULT '',
		source           bytea NOT NULL,
		facts            jsonb NOT NULL DEFAULT '{}',
		phase            text NOT NULL DEFAULT 'pending',
		resume_phase     text,
		contract_mode    text NOT NULL DEFAULT 'manual',
		contract_open    boolean NOT NULL DEFAULT false,
		expand_step      int NOT NULL DEFAULT 0,
		post_step        int NOT NULL DEFAULT 0,
		contract_step    int NOT NULL DEFAULT 0,
		rollback_step    int NOT NULL DEFAULT 0,
		rows_total       bigint NOT NULL DEFAULT 0,
		settings         jsonb NOT NULL DEFAULT '{}',
		error            text,
		owner            text,
		heartbeat_at     timestamptz,
		created_at       timestamptz NOT NULL DEFAULT now(),
		updated_at       timestamptz NOT NULL DEFAULT now(),
		phase_started_at timestamptz NOT NULL DEFAULT now(),
		finished_at      timestamptz
	)`,
	`CREATE UNIQUE INDEX jobs_live_name ON refit.jobs (name) WHERE phase NOT IN ('completed', 'aborted')`,
	`CREATE TABLE refit.job_events (
		id         bigserial PRIMARY KEY,
		job_id     bigint NOT NULL REFERENCES refit.jobs (id) ON DELETE CASCADE,
		at         timestamptz NOT NULL DEFAULT clock_timestamp(),
		from_phase text,
		to_phase   text NOT NULL,
		actor      text NOT NULL,
		message    text NOT NULL DEFAULT ''
	)`,
	`CREATE INDEX job_events_job ON refit.job_events (job_id, id)`,
	`CREATE TABLE refit.backfill_ranges (
		job_id       bigint NOT NULL REFERENCES refit.jobs (id) ON DELETE CASCADE,
		table_name   text NOT NULL,
		range_id     int NOT NULL,
		lower_key    text[],
		upper_key    text[],
		after_key    text[],
		done         boolean NOT NULL DEFAULT false,
		rows_done    bigint NOT NULL DEFAULT 0,
		rows_updated bigint NOT NULL DEFAULT 0,
		batches      bigint NOT NULL DEFAULT 0,
		updated_at   timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (job_id, table_name, range_id)
	)`,
	`CREATE TABLE refit.migrations (
		name       text PRIMARY KEY,
		checksum   text NOT NULL,
		job_id     bigint REFERENCES refit.jobs (id) ON DELETE SET NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`,
	`ALTER TABLE refit.jobs
		ADD COLUMN sync_confirmed_lsn  text,
		ADD COLUMN sync_lag_bytes      bigint,
		ADD COLUMN sync_retained_bytes bigint,
		ADD COLUMN sync_keys_applied   bigint NOT NULL DEFAULT 0,
		ADD COLUMN sync_last_commit_at timestamptz,
		ADD COLUMN sync_applied_at     timestamptz,
		ADD COLUMN throttled_by        text`,
	`ALTER TABLE refit.jobs
		ADD COLUMN sync_changed_at timestamptz,
		ALTER COLUMN contract_mode DROP NOT NULL,
		ALTER COLUMN contract_mode DROP DEFAULT,
		ALTER COLUMN facts SET DEFAULT '{}'`,
	// refit.submit lets any tool with a connection (psql, an Alembic
	// migration's op.execute, a CI job) submit a migration; a refit worker
	// validates it when it claims the job. contract NULL means the file's
	// contract key, else manual.
	`CREATE FUNCTION refit.submit(name text, source text, contract text DEFAULT NULL) RETURNS bigint
	LANGUAGE plpgsql AS $fn$
	DECLARE
		job_id bigint;
	BEGIN
		IF contract IS NOT NULL AND contract NOT IN ('manual', 'now', 'auto') THEN
			RAISE EXCEPTION 'refit.submit: contract must be manual, now or auto, not %', contract USING ERRCODE = '22023';
		END IF;
		INSERT INTO refit.jobs (name, checksum, file, source, contract_mode)
		VALUES (name, encode(sha256(convert_to(source, 'UTF8')), 'hex'), '(sql)', convert_to(source, 'UTF8'), contract)
		RETURNING id INTO job_id;
		INSERT INTO refit.job_events (job_id, to_phase, actor, message) VALUES (job_id, 'pending', session_user, 'submitted through refit.submit');
		PERFORM pg_notify('refit_control', job_id::text);
		RETURN job_id;
	END
	$fn$`,
	// Replication slot and origin names are cluster-wide, and they carry
	// the job id; job ids start at a per-database offset (the database's
	// OID × 10^6) so that two refit-managed databases on one server never
	// hand out the same id.
	`SELECT setval('refit.jobs_id_seq', greatest(
		(SELECT oid::bigint FROM pg_database WHERE datname = current_database()) * 1000000,
		(SELECT coalesce(max(id), 1) FROM refit.jobs)), false)`,
	// A function is executable by PUBLIC by default: refit.submit is
	// granted to the roles that submit instead (with USAGE on the schema
	// and the privileges it needs on refit.jobs and refit.job_events).
	`REVOKE ALL ON FUNCTION refit.submit(text, text, text) FROM PUBLIC`,
	// refit.submit resolves what it calls in pg_catalog only, whatever the
	// caller's search_path.
	`ALTER FUNCTION refit.submit(text, text, text) SET search_path = pg_catalog, pg_temp`,
	// refit abort --force: the rollback skips an undo step that fails
	// (with an event naming it) instead of failing the job.
	`ALTER TABLE refit.jobs ADD COLUMN force_abort boolean NOT NULL DEFAULT false`,
	// The fingerprint of the plan a job started expanding with: a resume
	// whose plan differs (another refit version, another file) is refused.
	`ALTER TABLE refit.jobs ADD COLUMN plan_fingerprint text`,
	// Where the running sync drops refit's own writes from the stream
	// (replication.OriginWalsender or OriginClient), for refit status.
	`ALTER TABLE refit.jobs ADD COLUMN sync_origin_filter text`,
	// refit.submit runs as its owner (SECURITY DEFINER) with a fixed
	// search_path, so a submitting role needs only EXECUTE on it (and USAGE
	// on the schema), never a privilege on refit's tables: a role that may
	// INSERT into refit.jobs could forge a job (a phase, facts, step
	// checkpoints) that skips validation. Every argument is data: bound
	// into the INSERTs, never built into SQL. The job it writes is always
	// pending, with no facts and no settings (a worker validates the file,
	// privileges included, when it claims the job, and only then stores
	// them); its event names the session's login role.
	`CREATE OR REPLACE FUNCTION refit.submit(name text, source text, contract text DEFAULT NULL) RETURNS bigint
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
	DECLARE
		job_id bigint;
	BEGIN
		IF name IS NULL OR source IS NULL THEN
			RAISE EXCEPTION 'refit.submit: name and source must not be NULL' USING ERRCODE = '22004';
		END IF;
		IF btrim(name) = '' OR name ~ '[[:cntrl:]]' THEN
			RAISE EXCEPTION 'refit.submit: the name must not be blank nor contain control characters' USING ERRCODE = '22023';
		END IF;
		IF contract IS NOT NULL AND contract NOT IN ('manual', 'now', 'auto') THEN
			RAISE EXCEPTION 'refit.submit: contract must be manual, now or auto, not %', contract USING ERRCODE = '22023';
		END IF;
		INSERT INTO refit.jobs (name, checksum, file, source, facts, settings, phase, contract_mode)
		VALUES (name, encode(sha256(convert_to(source, 'UTF8')), 'hex'), '(sql)', convert_to(source, 'UTF8'), '{}', '{}', 'pending', contract)
		RETURNING id INTO job_id;
		INSERT INTO refit.job_events (job_id, to_phase, actor, message) VALUES (job_id, 'pending', session_user, 'submitted through refit.submit');
		PERFORM pg_notify('refit_control', job_id::text);
		RETURN job_id;
	END
	$fn$`,
	// The schema is its owner's: write privileges on refit's tables and
	// sequences that earlier documentation had submitting roles granted
	// (INSERT on refit.jobs and refit.job_events, USAGE on their sequences)
	// are revoked from every role but the owner. refit.submit no longer
	// needs them; SELECT grants are left alone.
	`DO $do$
	DECLARE
		g record;
	BEGIN
		FOR g IN
			SELECT DISTINCT c.oid::regclass::text AS rel, c.relkind,
				CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS who
			FROM pg_class c, aclexplode(c.relacl) a
			WHERE c.relnamespace = 'refit'::regnamespace AND c.relkind IN ('r', 'p', 'S') AND a.grantee <> c.relowner
				AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'USAGE')
		LOOP
			IF g.relkind = 'S' THEN
				EXECUTE format('REVOKE USAGE, UPDATE ON SEQUENCE %s FROM %s', g.rel, g.who);
			ELSE
				EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON TABLE %s FROM %s', g.rel, g.who);
			END IF;
		END LOOP;
	END
	$do$`,
	// refit_operator is the role whose members may submit through SQL
	// (Open grants it USAGE on the schema and EXECUTE on refit.submit
	// whenever it exists). Roles are cluster-wide: refit creates it, once,
	// when it may create roles and no such role exists; otherwise a
	// superuser creates it (CREATE ROLE refit_operator NOLOGIN).
	`DO $do$
	BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'refit_operator')
			AND EXISTS (SELECT FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
			BEGIN
				CREATE ROLE refit_operator NOLOGIN;
			EXCEPTION WHEN duplicate_object OR unique_violation THEN
				NULL; -- created meanwhile for another database of the cluster
			END;
		END IF;
	END
	$do$`,
}
