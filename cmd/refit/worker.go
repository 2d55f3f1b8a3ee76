package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/refit-dev/refit/config"
	"github.com/refit-dev/refit/worker"
)

func newWorkerCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run the daemon: claim and run jobs on the configured targets",
		Long: `Run refit as a daemon. It watches the targets of the configuration
(targets: [{name, dsn}]), claims jobs submitted with 'refit submit' or
refit.submit() and drives them through their phases. Run two or more
replicas for availability: each job is run by one of them at a time, and if
it dies another takes the job over from its checkpoint. SIGTERM checkpoints
running jobs and exits 0. Serves /metrics, /healthz, /readyz and /jobs on
http.listen.`,
		Example: `  refit worker --config /etc/refit/refit.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if len(a.cfg.Targets) == 0 {
				if a.cfg.DSN == "" {
					return usageError{errors.New("no targets: set targets: [{name, dsn}] in the configuration (or --dsn for one target)")}
				}
				a.cfg.Targets = []worker.Target{{Name: "default", DSN: a.cfg.DSN}}
			}
			host, _ := os.Hostname() //nolint:errcheck // only a label
			id := fmt.Sprintf("worker@%s/%d", host, os.Getpid())
			metrics := worker.NewMetrics()
			d := worker.NewDaemon(worker.DaemonConfig{ID: id, Targets: a.cfg.Targets, Settings: a.cfg.Worker,
				DDL: a.cfg.DDL, Backfill: a.cfg.Backfill, Replication: a.cfg.Replication, Throttle: a.cfg.Throttle,
				RedactError: redactConnectError}, a.log, metrics)
			metrics.Attach(d)
			// Edits of the config file's backfill and throttle sections apply
			// to running jobs without a restart.
			config.Watch(a.configFile, a.flagMap(cmd), func(c config.Config) {
				if err := c.Backfill.Validate(); err == nil {
					d.SetTuning(c.Backfill, c.Throttle)
				}
			}, func(err error) {
				a.log.Warn("ignoring invalid configuration edit", zap.Error(err))
			})
			if a.cfg.HTTP.Listen != "" {
				srv, err := serveHTTP(ctx, a.cfg.HTTP.Listen, d, metrics, a.log)
				if err != nil {
					return err
				}
				defer func() {
					sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
					defer cancel()
					_ = srv.Shutdown(sctx) //nolint:errcheck // exiting
				}()
			}
			return d.Run(ctx)
		},
	}
	cmd.Flags().String("http-listen", "", "address for /metrics, /healthz, /readyz, /jobs (http.listen)")
	return cmd
}

func serveHTTP(ctx context.Context, addr string, d *worker.Daemon, m *worker.Metrics, log *zap.Logger) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.Ready() {
			http.Error(w, "targets not connected", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/jobs", func(w http.ResponseWriter, r *http.Request) {
		jobs, err := d.Jobs(r.Context())
		if err != nil && len(jobs) == 0 {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		views := make([]any, len(jobs))
		for i, j := range jobs {
			views[i] = struct {
				Target string `json:"target"`
				jobView
			}{j.Target, viewOf(j.Job)}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(views) //nolint:errcheck // client went away
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) }}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", zap.Error(err))
		}
	}()
	log.Info("http listening", zap.String("addr", ln.Addr().String()))
	return srv, nil
}
