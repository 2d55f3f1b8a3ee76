package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/sqlstate"
)

// Connect opens refit's pool to a target database, refusing a server older
// than refit supports (replication.CheckServerVersion) before anything is
// created on it. Every session gets the settings in SessionDefaults.
func Connect(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	if pc.ConnConfig.RuntimeParams == nil {
		pc.ConnConfig.RuntimeParams = map[string]string{}
	}
	if pc.ConnConfig.RuntimeParams["application_name"] == "" {
		pc.ConnConfig.RuntimeParams["application_name"] = "refit"
	}
	// Expressions in migrations are validated assuming standard strings.
	pc.ConnConfig.RuntimeParams["standard_conforming_strings"] = "on"
	if maxConns > 0 {
		pc.MaxConns = maxConns
	}
	pc.AfterConnect = SessionDefaults
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := replication.CheckServerVersion(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// SessionDefaults prepares every refit session:
//   - search_path: the configured one (DSN options, ALTER ROLE/DATABASE …
//     SET search_path) with pg_catalog searched first and pg_temp last (see
//     SafeSearchPath), so that no schema shadows a built-in and no
//     temporary object of the session shadows a table or function;
//   - client_connection_check_interval (PG14+): a backend notices within a
//     second that its refit process died (SIGKILL, OOM) even while it waits
//     on a lock, instead of holding locks, origins or slots until then;
//   - deadlock_timeout 100ms: in a deadlock between refit and the
//     application, refit's session runs the deadlock check first and is the
//     one cancelled (and retried), not the application's. Setting it needs
//     superuser; otherwise set it for refit's role once:
//     ALTER ROLE refit SET deadlock_timeout = '100ms'.
func SessionDefaults(ctx context.Context, conn *pgx.Conn) error {
	if err := setSafeSearchPath(ctx, conn); err != nil {
		return err
	}
	for _, set := range []string{"SET client_connection_check_interval = 1000", "SET deadlock_timeout = 100"} {
		_, err := conn.Exec(ctx, set)
		if sqlstate.Is(err, sqlstate.UndefinedObject, sqlstate.InsufficientPrivilege) {
			continue // unknown on this version, or not permitted: best effort
		}
		if err != nil {
			return fmt.Errorf("%s: %w", set, err)
		}
	}
	return nil
}

// setSafeSearchPath rewrites the session's search_path with SafeSearchPath.
// Both statements name pg_catalog's functions explicitly: the configured
// path is still in force while they run.
func setSafeSearchPath(ctx context.Context, conn *pgx.Conn) error {
	var configured string
	if err := conn.QueryRow(ctx, "SELECT pg_catalog.current_setting('search_path')").Scan(&configured); err != nil {
		return fmt.Errorf("read search_path: %w", err)
	}
	safe, err := SafeSearchPath(configured)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.set_config('search_path', $1, false)", safe); err != nil {
		return fmt.Errorf("set search_path to %s: %w", safe, err)
	}
	return nil
}

// SafeSearchPath turns a configured search_path into the one refit
// sessions use: the same schemas in the same order, without pg_catalog and
// pg_temp, followed by pg_temp. Name lookup then goes pg_catalog, the
// configured schemas, pg_temp: pg_catalog, when it is not listed, is
// searched before everything else, and an explicit pg_temp is searched where
// it stands (pg_temp is never searched for functions and operators).
//
// pg_catalog is left implicit rather than written first because the first
// schema of the path is the one unqualified CREATEs create in (and what
// current_schema() returns): an explicit leading pg_catalog would put a
// migration's unqualified CREATE TYPE into pg_catalog. The first configured
// schema keeps that role. (When none of the configured schemas exists,
// pg_temp is the first, and an unqualified CREATE makes a temporary object.)
//
// configured is parsed as PostgreSQL parses the setting (a comma-separated
// list of names, double-quoted or bare), and every other entry is written
// back exactly as it was written, quotes included, so it names the same
// schema: "$user" and schemas that do not exist yet are kept.
func SafeSearchPath(configured string) (string, error) {
	entries, err := splitSearchPath(configured)
	if err != nil {
		return "", fmt.Errorf("parse search_path %q: %w", configured, err)
	}
	out := make([]string, 0, len(entries)+1)
	for _, e := range entries {
		if e.name == "pg_catalog" || e.name == "pg_temp" {
			continue
		}
		out = append(out, e.text)
	}
	return strings.Join(append(out, "pg_temp"), ", "), nil
}

// pathEntry is one name of a search_path value: the name it stands for
// (unquoted; a bare name folded to lower case) and its text in the value.
type pathEntry struct{ name, text string }

// splitSearchPath splits a search_path value like PostgreSQL's
// SplitIdentifierString with separator ',': whitespace around names is
// ignored; a quoted name keeps its case and "" in it stands for "; a bare
// name runs to the next comma or whitespace and is folded to lower case
// (ASCII letters only: enough to recognise pg_catalog and pg_temp, and the
// server folds the written-back text itself).
func splitSearchPath(s string) ([]pathEntry, error) {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' }
	i := 0
	skip := func() {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
	}
	skip()
	if i == len(s) {
		return nil, nil
	}
	var entries []pathEntry
	for {
		start := i
		var name strings.Builder
		if i < len(s) && s[i] == '"' {
			i++
			for {
				j := strings.IndexByte(s[i:], '"')
				if j < 0 {
					return nil, errors.New("unterminated quoted name")
				}
				name.WriteString(s[i : i+j])
				i += j + 1
				if i < len(s) && s[i] == '"' {
					name.WriteByte('"')
					i++
					continue
				}
				break
			}
		} else {
			for i < len(s) && s[i] != ',' && !isSpace(s[i]) {
				i++
			}
			if i == start {
				return nil, errors.New("empty name")
			}
			for _, c := range []byte(s[start:i]) {
				if c >= 'A' && c <= 'Z' {
					c += 'a' - 'A'
				}
				name.WriteByte(c)
			}
		}
		entries = append(entries, pathEntry{name: name.String(), text: s[start:i]})
		skip()
		if i == len(s) {
			return entries, nil
		}
		if s[i] != ',' {
			return nil, fmt.Errorf("unexpected %q after %s", s[i], s[start:i])
		}
		i++
		skip()
	}
}
