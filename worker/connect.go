package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Connect opens refit's pool to a target database. Every session gets the
// settings in SessionDefaults.
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
	return pool, nil
}

// SessionDefaults prepares every refit session:
//   - client_connection_check_interval (PG14+): a backend notices within a
//     second that its refit process died (SIGKILL, OOM) even while it waits
//     on a lock, instead of holding locks, origins or slots until then;
//   - deadlock_timeout 100ms: in a deadlock between refit and the
//     application, refit's session runs the deadlock check first and is the
//     one cancelled (and retried), not the application's. Setting it needs
//     superuser; otherwise set it for refit's role once:
//     ALTER ROLE refit SET deadlock_timeout = '100ms'.
func SessionDefaults(ctx context.Context, conn *pgx.Conn) error {
	for _, set := range []string{"SET client_connection_check_interval = 1000", "SET deadlock_timeout = 100"} {
		_, err := conn.Exec(ctx, set)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "42704" || pgErr.Code == "42501") {
			continue // unknown on this version, or not permitted: best effort
		}
		if err != nil {
			return fmt.Errorf("%s: %w", set, err)
		}
	}
	return nil
}
