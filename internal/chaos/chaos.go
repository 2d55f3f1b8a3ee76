// Package chaos is refit's proof under faults. It starts a PostgreSQL
// cluster of its own and runs a sequence of migrations (add_column NOT NULL
// with up, create_index, add_check, a volatile default, drop_column, sql
// steps; backfills in one or in parallel ranges; one migration aborted in
// its window, then run again) while an application on its own pool writes
// and keeps a ledger of every committed write. The entry point alternates
// between `refit run` and two `refit worker` replicas fed by `refit submit`.
// Seeded faults land at random points of every phase, the rollback
// included: SIGKILL of `refit run` or of the replica owning the job;
// PostgreSQL stopped with pg_ctl -m immediate and restarted on the same
// port; one of refit's sessions (found by application_name) or the job's
// walsender terminated; an ACCESS SHARE lock held across a DDL step for
// longer than lock_timeout; a transaction holding an xid while the slot is
// created. Jobs are resumed as an operator would: re-running the entry
// point, `refit retry` for a job the workers left failed. After each
// migration every row must hold what the ledger says (old columns) and what
// `up` says (new columns), volatile columns their own values, each sql step
// must have run exactly once, and nothing of refit's may be left behind.
//
// Run drives it; `make chaos` runs it with 50 faults (TestChaos with
// REFIT_CHAOS_FAULTS and REFIT_CHAOS_SEED); `go test ./...` runs a 5-fault
// smoke.
package chaos

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/internal/pgtest"
)

// Config configures Run.
type Config struct {
	// Binary is the refit binary under test.
	Binary string
	// Faults is how many faults to inject (at least 1).
	Faults int
	// Seed makes the plan and every random choice of the harness
	// reproducible (timing still varies between runs).
	Seed uint64
	// Rows is the size of the application table at the start.
	Rows int
	// Dir holds the migration files and refit's configuration.
	Dir string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// LogDir, if set, keeps the output of every refit process there.
	LogDir string
	// Superuser runs refit as the cluster's superuser instead of the
	// least-privilege role of docs/safety.md (LOGIN REPLICATION, owner of
	// the tables, the documented grants).
	Superuser bool
}

// entry is the entry point that runs a migration's job.
type entry int

const (
	entryRun    entry = iota // refit run FILE --contract manual
	entryWorker              // refit submit FILE --contract manual, run by a refit worker daemon
)

func (e entry) String() string { return [...]string{"refit run", "refit worker"}[e] }

const (
	ddlLockTimeout = 300 * time.Millisecond
	migrationLimit = 4 * time.Minute // one migration, faults and resumes included
	waitStep       = 10 * time.Millisecond
)

// harness is the state of one Run.
type harness struct {
	cfg   Config
	rng   *rand.Rand
	logf  func(format string, args ...any)
	tally *Tally

	cluster  *pgtest.Cluster
	dsn      string        // the harness's and the application's (a superuser)
	refitDSN string        // refit's: the least-privilege role of docs/safety.md, unless Config.Superuser
	ctl      *pgxpool.Pool // the harness's own sessions
	app      *pgxpool.Pool // the application's
	srv      *server
	w        *writer
	conf     string // refit's configuration file

	completed []*migration
	tokens    map[string]map[int64]string // volatile column → id → value, once its migration completed

	// The migration being run.
	m            *migration
	file         string
	minJob       int64   // jobs of this attempt have a larger id
	run          *proc   // refit run, entryRun
	daemons      []*proc // two refit worker replicas, entryWorker (nil: dead)
	abort        *proc   // refit abort, in the attempt aborted on purpose
	submitted    bool
	gateOpen     bool
	abortStarted bool
	resumeAt     time.Time   // the entry point is resumed no earlier than this
	faultSince   bool        // a fault fired since the entry point (re)started the job
	lastOut      *tailBuffer // output of the last refit process that exited
	lastPhase    string
	lastJobErr   string
	xid          *pgx.Conn // a transaction holding an xid, for faults at slot creation
	procs        int       // refit processes started
	lastKill     time.Time // of a refit process by a fault
}

// Run runs the chaos harness and returns its tally. An error means a
// discrepancy (a row that differs from the ledger or from `up`, a write
// that failed because of refit, something refit left behind, a job that did
// not complete) or that the harness itself could not go on.
func Run(ctx context.Context, cfg Config) (*Tally, error) {
	begin := time.Now()
	if cfg.Faults < 1 || cfg.Rows < 100 || cfg.Binary == "" || cfg.Dir == "" {
		return nil, errors.New("chaos: Faults >= 1, Rows >= 100, Binary and Dir are required")
	}
	h := &harness{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x636861)), logf: cfg.Logf, srv: newServer(),
		tally: newTally(cfg.Seed), tokens: map[string]map[int64]string{}}
	if h.logf == nil {
		h.logf = func(string, ...any) {}
	} else {
		logf := h.logf
		h.logf = func(format string, args ...any) {
			logf("%7.2fs "+format, append([]any{time.Since(begin).Seconds()}, args...)...)
		}
	}
	err := h.main(ctx)
	h.tally.Wall = time.Since(begin)
	if err != nil {
		return h.tally, fmt.Errorf("chaos (seed %d): %w", cfg.Seed, err)
	}
	return h.tally, nil
}

func (h *harness) main(ctx context.Context) (err error) {
	h.cluster, err = pgtest.Start(ctx, pgtest.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n--- server log tail:\n%s", err, h.cluster.LogTail())
		}
		if serr := h.cluster.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	if h.dsn, err = h.cluster.CreateDatabase(ctx, "chaos"); err != nil {
		return err
	}
	// The harness's reads run unprepared: a prepared SELECT of a column
	// whose type alter_column changed fails once with "cached plan must not
	// change result type" (docs/migrations.md, alter_column).
	if h.ctl, err = newPool(ctx, h.dsn, "chaos-harness", 4, pgx.QueryExecModeExec); err != nil {
		return err
	}
	defer h.ctl.Close()
	const workers = 2
	if h.app, err = newPool(ctx, h.dsn, appName, workers, pgx.QueryExecModeCacheStatement); err != nil {
		return err
	}
	defer h.app.Close()

	migs := sequence(h.cfg.Faults)
	if err := h.setup(ctx, len(migs)+4); err != nil {
		return err
	}
	// One migration (not the first) is aborted once on purpose, then run again.
	migs[1+h.rng.IntN(len(migs)-1)].abortFirst = true
	plan := planFaults(h.rng, migs, h.cfg.Faults)
	for i, m := range migs {
		var aims []string
		for _, f := range plan[i] {
			aims = append(aims, f.kind.String()+"@"+f.aim.String())
		}
		abort := ""
		if m.abortFirst {
			abort = " (aborted once first)"
		}
		h.logf("plan: %s by %s%s: %s", m.name, m.entry, abort, strings.Join(aims, ", "))
	}

	h.w = newWriter(h.app, h.srv, h.cfg.Rows, workers, 40)
	h.w.start(ctx, h.cfg.Seed)
	defer h.w.stop()
	defer h.stopDaemons(context.WithoutCancel(ctx))
	defer h.stopRun()

	var carry []*fault
	for i := 0; i < len(migs) || len(carry) > 0; i++ {
		if i >= len(migs) {
			if i >= len(migs)+4 {
				return fmt.Errorf("%d faults could not be placed in the migrations (first %s@%s)", len(carry), carry[0].kind, carry[0].aim)
			}
			// Faults that missed their aim go to extra migrations.
			last := migs[len(migs)-1]
			migs = append(migs, newMigration(len(migs)+1, last.cycle+1, template(len(migs)%int(numTemplates)), entry(len(migs)%2)))
			plan = append(plan, nil)
		}
		m := migs[i]
		faults := plan[i]
		var keep []*fault
		for _, f := range carry {
			f.kind = carryKind(f.kind, m)
			if m.allows(f.kind, f.aim) {
				faults = append(faults, f)
			} else {
				keep = append(keep, f)
			}
		}
		carry = keep
		sortFaults(faults)
		missed, err := h.migrate(ctx, m, faults)
		if err != nil {
			return fmt.Errorf("migration %s (%s): %w", m.name, m.entry, err)
		}
		for _, f := range missed {
			if f.aim == atAbort {
				f.aim = atContract // the only abort is over: stall a contract instead
			}
		}
		carry = append(carry, missed...)
	}
	if !h.cfg.Superuser {
		// refit ran as the least-privilege role: its schema is that role's.
		var owner string
		if err := h.ctl.QueryRow(ctx, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'refit'").Scan(&owner); err != nil {
			return fmt.Errorf("owner of schema refit: %w", err)
		}
		if owner != refitRole {
			return fmt.Errorf("schema refit is owned by %s, want %s: refit did not run as the least-privilege role", owner, refitRole)
		}
	}
	st, nerr, errs := h.w.snapshot()
	h.tally.Writes, h.tally.WriterErrors = st, nerr
	if nerr > 0 {
		return fmt.Errorf("the application saw %d errors (%d writes): %v", nerr, st.committed(), errs)
	}
	if n := len(h.tally.Unexpected); n > 0 {
		return fmt.Errorf("%d failures of refit with no fault to cause them:\n%s", n, strings.Join(h.tally.Unexpected, "\n"))
	}
	return nil
}

// carryKind turns a kill into the kill of m's entry point.
func carryKind(k kind, m *migration) kind {
	if k == killRun || k == killWorker {
		return kindClass(killEntry).resolve(m)
	}
	return k
}

// sequence is the migrations: the templates in turn, cycle after cycle,
// about four faults each, alternating the entry point (shifted each cycle,
// so each template runs under both).
func sequence(faults int) []*migration {
	n := max(int(numTemplates), (faults+3)/4)
	out := make([]*migration, n)
	for i := range out {
		c := i/int(numTemplates) + 1
		k := i % int(numTemplates)
		out[i] = newMigration(i+1, c, template(k), entry((k+c)%2))
	}
	return out
}

func newPool(ctx context.Context, dsn, name string, conns int32, mode pgx.QueryExecMode) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.DefaultQueryExecMode = mode
	cfg.ConnConfig.RuntimeParams["application_name"] = name
	cfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", name, err)
	}
	return pool, nil
}

// setup creates the application table (with a legacy column per cycle, for
// the drops) and refit's configuration file.
func (h *harness) setup(ctx context.Context, cycles int) error {
	var legacy, legacyVals []string
	for c := 1; c <= cycles; c++ {
		legacy = append(legacy, legacyColumn(c)+" text")
		legacyVals = append(legacyVals, "'legacy ' || i")
	}
	sql := fmt.Sprintf(`CREATE TABLE `+auditTable+` (n bigserial PRIMARY KEY, tag text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
		CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, qty int NOT NULL, %s);
		INSERT INTO %s SELECT i, 'item ' || i, i %% 1000, %s FROM generate_series(1, %d) i;
		CREATE INDEX %s ON %s (name);
		ANALYZE %s`, table, strings.Join(legacy, ", "), table, strings.Join(legacyVals, ", "), h.cfg.Rows, nameIndex, table, table)
	if _, err := h.ctl.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create %s: %w", table, err)
	}
	var err error
	h.refitDSN = h.dsn
	if !h.cfg.Superuser {
		if h.refitDSN, err = h.leastPrivilegeRole(ctx); err != nil {
			return err
		}
	}
	batch := min(max(h.cfg.Rows/25, 50), 500)
	conf := fmt.Sprintf(`dsn: %q
targets:
  - name: chaos
    dsn: %q
worker:
  poll_interval: 200ms
  max_jobs: 2
  shutdown_timeout: 15s
backfill:
  batch_size: %d
  target_batch_time: 0s
  sleep: 10ms
ddl:
  lock_timeout: %s
  retry_initial: 50ms
  retry_max: 500ms
replication:
  status_interval: 250ms
log:
  level: info
  format: json
http:
  listen: ""
`, h.refitDSN, h.refitDSN, batch, ddlLockTimeout)
	h.conf = filepath.Join(h.cfg.Dir, "refit.yaml")
	if err := os.WriteFile(h.conf, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("write refit configuration: %w", err)
	}
	return nil
}

// refitRole is the role refit runs as, unless Config.Superuser.
const refitRole = "refit_chaos"

// leastPrivilegeRole creates the role of docs/safety.md ("Privileges"):
// LOGIN REPLICATION, the owner of the application's tables, with CREATE on
// the database (for the refit schema) and on schema public, membership of
// pg_read_all_stats, and EXECUTE on the replication-origin functions. It
// returns the DSN refit connects with.
func (h *harness) leastPrivilegeRole(ctx context.Context) (string, error) {
	pw := make([]byte, 12)
	if _, err := crand.Read(pw); err != nil {
		return "", err
	}
	password := hex.EncodeToString(pw)
	role := pgx.Identifier{refitRole}.Sanitize()
	var db string
	if err := h.ctl.QueryRow(ctx, "SELECT current_database()::text").Scan(&db); err != nil {
		return "", err
	}
	for _, stmt := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN REPLICATION PASSWORD '%s'", role, password),
		fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s", pgx.Identifier{db}.Sanitize(), role),
		"GRANT CREATE ON SCHEMA public TO " + role,
		"GRANT pg_read_all_stats TO " + role,
		`GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text), pg_catalog.pg_replication_origin_drop(text),
			pg_catalog.pg_replication_origin_session_setup(text), pg_catalog.pg_replication_origin_session_reset() TO ` + role,
		fmt.Sprintf("ALTER TABLE %s OWNER TO %s", table, role),
		fmt.Sprintf("ALTER TABLE %s OWNER TO %s", auditTable, role),
	} {
		if _, err := h.ctl.Exec(ctx, stmt); err != nil {
			return "", fmt.Errorf("create refit's role: %w", err)
		}
	}
	u, err := url.Parse(h.dsn)
	if err != nil {
		return "", fmt.Errorf("create refit's role: %w", err)
	}
	u.User = url.UserPassword(refitRole, password)
	return u.String(), nil
}
