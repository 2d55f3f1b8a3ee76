#!/usr/bin/env bash
# Control experiment for docs/benchmarks.md: what a bulk UPDATE costs a
# 500 writes/s application on this machine *without refit*, and what a
# logical-replication slot streaming that UPDATE adds.
#
# Usage: PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres PGDATABASE=postgres docs/control-bench.sh [path/to/refit]
# Needs: psql, pgbench, pg_recvlogical; a scratch database with wal_level=logical
# (it drops and recreates a table named users, a publication p and a slot s).
# With a refit binary it also times refit's backfill of the example migration.
set -euo pipefail
REFIT=${1:-}
P="psql -q -v ON_ERROR_STOP=1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/app.sql" <<'EOF'
\set id random(1, 1000000)
\set r random(1, 3)
\if :r = 1
INSERT INTO users (full_name, email) VALUES ('Ada Lovelace', 'app@example.com');
\else
UPDATE users SET full_name = 'Grace Hopper' WHERE id = :id;
\endif
EOF

reset_table() {
	$P -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 's' OR slot_name LIKE 'refit_%'" \
		-c "DROP PUBLICATION IF EXISTS p" -c "DROP SCHEMA IF EXISTS refit CASCADE" -c "DROP TABLE IF EXISTS users" \
		-c "DROP TYPE IF EXISTS user_status_enum" >/dev/null 2>&1 || true
	$P <<'EOF'
CREATE TABLE users (id bigserial PRIMARY KEY, full_name text NOT NULL, email text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO users (full_name, email)
SELECT (ARRAY['Ada','Alan','Grace','Edsger','Barbara','Donald','Frances','Ken','Radia','Leslie'])[1 + i % 10]
       || ' ' || (ARRAY['Lovelace','Turing','Hopper','Dijkstra','Liskov','Knuth','Allen','Thompson','Perlman','Lamport'])[1 + (i / 10) % 10]
       || CASE WHEN i % 7 = 0 THEN ' Jr' ELSE '' END, 'user' || i || '@example.com'
FROM generate_series(1, 1000000) AS i;
ALTER TABLE users ADD COLUMN first_name varchar(100), ADD COLUMN last_name varchar(100);
CREATE OR REPLACE PROCEDURE batched_update(bs int) LANGUAGE plpgsql AS $$
DECLARE a bigint := 0; u bigint;
BEGIN
  LOOP
    SELECT id INTO u FROM users WHERE id > a ORDER BY id OFFSET bs - 1 LIMIT 1;
    IF u IS NULL THEN u := 9223372036854775807; END IF;
    UPDATE users SET first_name = split_part(full_name, ' ', 1), last_name = substring(full_name from position(' ' in full_name) + 1)
     WHERE id > a AND id <= u
       AND (first_name IS DISTINCT FROM split_part(full_name, ' ', 1)
            OR last_name IS DISTINCT FROM substring(full_name from position(' ' in full_name) + 1));
    COMMIT;
    EXIT WHEN u = 9223372036854775807;
    a := u;
  END LOOP;
END $$;
VACUUM ANALYZE users;
CHECKPOINT;
EOF
}

# writer SECONDS: pgbench at 500 writes/s (4 clients), prints p50/p99/max.
writer() {
	rm -f "$work"/pgbench_log.*
	(cd "$work" && pgbench -n -c 4 -j 2 -R 500 -T "$1" -f app.sql -l >/dev/null 2>&1)
	cat "$work"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {
		printf "   writer: n %d, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", NR, a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, a[NR]/1000}'
}

reset_table
echo "(a) no bulk update (6 s)"
writer 6

reset_table
echo "(b) PostgreSQL's own batched UPDATE (PL/pgSQL, COMMIT every 6000 rows), no slot"
(sleep 0.5; $P -c '\timing on' -c "CALL batched_update(6000)" | sed 's/^/   /') &
writer 6; wait

reset_table
$P -c "CREATE PUBLICATION p FOR TABLE users (id) WITH (publish = 'insert, update')" \
	-c "SELECT pg_create_logical_replication_slot('s', 'pgoutput')" >/dev/null
pg_recvlogical -d "${PGDATABASE:-postgres}" -S s --start -o proto_version=1 -o publication_names=p -f /dev/null &
recv=$!
sleep 0.3
echo "(c) the same batched UPDATE while a key-only pgoutput slot streams it (pg_recvlogical)"
(sleep 0.5; $P -c '\timing on' -c "CALL batched_update(6000)" | sed 's/^/   /') &
update=$!
writer 6; wait "$update"
kill "$recv" 2>/dev/null || true; wait "$recv" 2>/dev/null || true

if [ -n "$REFIT" ]; then
	reset_table
	$P -c "ALTER TABLE users DROP COLUMN first_name, DROP COLUMN last_name" -c "VACUUM ANALYZE users" -c "CHECKPOINT" >/dev/null
	echo "(d) refit's backfill of examples/split_full_name.yaml, default settings (stops at the window)"
	dsn="host=${PGHOST:-localhost} port=${PGPORT:-5432} user=${PGUSER:-postgres} dbname=${PGDATABASE:-postgres}"
	(sleep 0.5; "$REFIT" run "$(dirname "$0")/../examples/split_full_name.yaml" --dsn "$dsn" --contract manual --exit-at-window \
		--log-format json 2>&1 | grep -o '"table backfilled.*' | sed 's/^/   /') &
	writer 9; wait
	reset_table
fi
$P -c "DROP TABLE IF EXISTS users" -c "DROP PROCEDURE IF EXISTS batched_update(int)" >/dev/null
