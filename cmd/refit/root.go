package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/refit-dev/refit/config"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/worker"
)

// Exit codes (docs/running.md). A job that ends other than completed is
// never exit 0, so CI cannot read an aborted migration as applied.
const (
	exitOK      = 0
	exitFailed  = 1 // the job (or refit) failed
	exitInvalid = 2 // invalid migration file, configuration, usage, or a missing privilege (nothing changed)
	exitAborted = 3 // the job was aborted (by this or another process)
	exitPaused  = 4 // the job was paused by an operator: it has not finished
	exitBlocked = 5 // an earlier live job holds one of the migration's tables
)

// jobEnded reports a job that ended without completing; the message is
// printed and the command exits with code.
type jobEnded struct {
	code int
	msg  string
}

func (e jobEnded) Error() string { return e.msg }

// usageError marks errors that are the caller's input, not a failure.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// app is what every subcommand shares: configuration, logger, output.
type app struct {
	configFile string
	flags      *pflag.FlagSet
	cfg        config.Config
	log        *zap.Logger
	out        io.Writer
	errOut     io.Writer
}

func run(ctx context.Context, args []string) int {
	a := &app{out: os.Stdout, errOut: os.Stderr}
	root := newRoot(a)
	root.SetArgs(args)
	root.SetOut(a.out)
	root.SetErr(a.errOut)
	err := root.ExecuteContext(ctx)
	if a.log != nil {
		_ = a.log.Sync() //nolint:errcheck // stderr sync errors are not actionable
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(a.errOut, "refit:", err)
	var je jobEnded
	if errors.As(err, &je) {
		return je.code
	}
	var ue usageError
	var pe *worker.PrivilegeError
	if errors.As(err, &ue) || migration.IsInvalid(err) || errors.As(err, &pe) {
		return exitInvalid
	}
	return exitFailed
}

func newRoot(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:           "refit",
		Short:         "Online schema changes for large, busy PostgreSQL tables",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.setup(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.configFile, "config", "", "configuration file (default ./refit.yaml if present)")
	pf.String("dsn", "", "target database connection string (or REFIT_DSN)")
	pf.String("log-level", "", "log level: debug, info, warn, error")
	pf.String("log-format", "", "log format: console or json")
	a.flags = pf
	root.AddCommand(newPlanCmd(a), newRunCmd(a), newSubmitCmd(a), newWorkerCmd(a), newStatusCmd(a),
		newPauseCmd(a), newResumeCmd(a), newAbortCmd(a), newCompleteCmd(a), newRetryCmd(a), newSetCmd(a),
		newVerifyCmd(a), newDemoCmd(a), newBenchCmd(a))
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	return root
}

// setup loads the configuration and builds the logger.
func (a *app) setup(cmd *cobra.Command) error {
	cfg, err := config.Load(a.configFile, a.flagMap(cmd))
	if err != nil {
		return usageError{err}
	}
	a.cfg = cfg
	a.log, err = newLogger(cfg.Log, a.errOut)
	return err
}

// flagMap maps configuration keys to the command's flags.
func (a *app) flagMap(cmd *cobra.Command) map[string]*pflag.Flag {
	flags := map[string]*pflag.Flag{
		"dsn":        cmd.Flags().Lookup("dsn"),
		"log.level":  cmd.Flags().Lookup("log-level"),
		"log.format": cmd.Flags().Lookup("log-format"),
	}
	for key, name := range map[string]string{
		"backfill.batch_size":   "batch-size",
		"http.listen":           "http-listen",
		"ddl.lock_timeout":      "lock-timeout",
		"backfill.lock_timeout": "lock-timeout",
	} {
		if f := cmd.Flags().Lookup(name); f != nil {
			flags[key] = f
		}
	}
	return flags
}

func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	var level zapcore.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, usageError{fmt.Errorf("log.level: %w", err)}
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.Format == "json" {
		enc = zapcore.NewJSONEncoder(encCfg)
	} else {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level)), nil
}

// connect opens a pool to the configured target. Neither its error nor
// its log shows the DSN's password: the DSN is described by
// config.RedactDSN, the error redacted by config.RedactError.
func (a *app) connect(ctx context.Context) (*pgxpool.Pool, error) {
	if a.cfg.DSN == "" {
		return nil, usageError{errors.New("no target database: pass --dsn or set REFIT_DSN")}
	}
	pool, err := worker.Connect(ctx, a.cfg.DSN, 8)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", config.RedactDSN(a.cfg.DSN), redactConnectError(err, a.cfg.DSN))
	}
	a.log.Debug("connected", zap.String("dsn", config.RedactDSN(a.cfg.DSN)))
	return pool, nil
}
