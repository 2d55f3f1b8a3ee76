// Package config owns refit's configuration: built-in defaults, then a
// refit.yaml file, then REFIT_* environment variables, then command-line
// flags, loaded with viper into one typed, validated Config. Only this
// package and cmd/ touch viper; everything below takes the typed struct.
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/fsnotify/fsnotify"
	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/ddl"
	"github.com/refit-dev/refit/replication"
	"github.com/refit-dev/refit/throttle"
	"github.com/refit-dev/refit/worker"
)

// Config is refit's whole configuration.
type Config struct {
	// DSN is the target database (also REFIT_DSN / --dsn).
	DSN         string             `mapstructure:"dsn"`
	DDL         ddl.Config         `mapstructure:"ddl"`
	Backfill    backfill.Config    `mapstructure:"backfill"`
	Replication replication.Config `mapstructure:"replication"`
	Throttle    throttle.Config    `mapstructure:"throttle"`
	Log         Log                `mapstructure:"log"`

	// Targets are the databases `refit worker` watches.
	Targets []worker.Target `mapstructure:"targets"`
	// Worker tunes the daemon.
	Worker worker.Settings `mapstructure:"worker"`
	// HTTP serves /metrics, /healthz, /readyz and /jobs from `refit worker`.
	HTTP HTTP `mapstructure:"http"`
}

// HTTP configures the daemon's HTTP listener.
type HTTP struct {
	Listen string `mapstructure:"listen"` // e.g. ":9187"; empty = off
}

// Log configures logging.
type Log struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // console or json
}

// Default returns the built-in defaults.
func Default() Config {
	return Config{
		DDL:         ddl.DefaultConfig(),
		Backfill:    backfill.DefaultConfig(),
		Replication: replication.DefaultConfig(),
		Throttle:    throttle.DefaultConfig(),
		Log:         Log{Level: "info", Format: "console"},
		Worker:      worker.DefaultSettings(),
		HTTP:        HTTP{Listen: ":9187"},
	}
}

// Validate checks the whole configuration.
func (c Config) Validate() error {
	var errs []error
	if err := c.DDL.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Backfill.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Replication.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Throttle.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Worker.Validate(); err != nil {
		errs = append(errs, err)
	}
	names := map[string]bool{}
	for i, t := range c.Targets {
		if t.Name == "" || t.DSN == "" {
			errs = append(errs, fmt.Errorf("targets[%d]: name and dsn are required", i))
		}
		if names[t.Name] {
			errs = append(errs, fmt.Errorf("targets[%d]: duplicate name %q", i, t.Name))
		}
		names[t.Name] = true
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: want console or json", c.Log.Format))
	}
	return errors.Join(errs...)
}

// Load builds the Config: defaults < file < REFIT_* env < flags. file may be
// empty, then ./refit.yaml is used if it exists. flags maps viper keys to
// command-line flags (only flags the user set override).
func Load(file string, flags map[string]*pflag.Flag) (Config, error) {
	v := viper.New()
	def := Default()
	setDefaults(v, def)
	v.SetEnvPrefix("REFIT")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	switch {
	case file != "":
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("read config %s: %w", file, err)
		}
	default:
		if _, err := os.Stat("refit.yaml"); err == nil {
			v.SetConfigFile("refit.yaml")
			if err := v.ReadInConfig(); err != nil {
				return Config{}, fmt.Errorf("read config refit.yaml: %w", err)
			}
		}
	}
	for key, f := range flags {
		if f != nil && f.Changed {
			if err := v.BindPFlag(key, f); err != nil {
				return Config{}, fmt.Errorf("bind flag %s: %w", f.Name, err)
			}
		}
	}
	var c Config
	if err := v.Unmarshal(&c, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(mapstructure.StringToTimeDurationHookFunc())
	}); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// setDefaults registers every key with its default, so that environment
// variables are seen for keys absent from the file.
func setDefaults(v *viper.Viper, def Config) {
	m := map[string]any{}
	if err := mapstructure.Decode(def, &m); err != nil {
		panic(err) // Config is a plain struct; this cannot fail
	}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, val := range m {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			if sub, ok := val.(map[string]any); ok {
				walk(key, sub)
				continue
			}
			v.SetDefault(key, val)
		}
	}
	walk("", m)
}

// Watch reloads the configuration file whenever it changes and hands the
// new, validated configuration to onChange; an invalid edit is reported
// through onError and ignored. Flags and environment apply as at start.
func Watch(file string, flags map[string]*pflag.Flag, onChange func(Config), onError func(error)) {
	if file == "" {
		if _, err := os.Stat("refit.yaml"); err != nil {
			return
		}
		file = "refit.yaml"
	}
	v := viper.New()
	v.SetConfigFile(file)
	v.OnConfigChange(func(fsnotify.Event) {
		cfg, err := Load(file, flags)
		if err != nil {
			onError(err)
			return
		}
		onChange(cfg)
	})
	v.WatchConfig()
}
