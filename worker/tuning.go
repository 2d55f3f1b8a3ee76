package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/migration"
	"github.com/refit-dev/refit/throttle"
)

// Tunables are the settings that may change while a job runs (refit set,
// the migration file's settings key), by their configuration key. Each
// takes effect at the next batch.
var Tunables = map[string]func(v string, b *backfill.Config, t *throttle.Config) error{
	"backfill.batch_size":          intSetting(func(b *backfill.Config, _ *throttle.Config) *int { return &b.BatchSize }),
	"backfill.min_batch_size":      intSetting(func(b *backfill.Config, _ *throttle.Config) *int { return &b.MinBatchSize }),
	"backfill.max_batch_size":      intSetting(func(b *backfill.Config, _ *throttle.Config) *int { return &b.MaxBatchSize }),
	"backfill.target_batch_time":   durSetting(func(b *backfill.Config, _ *throttle.Config) *time.Duration { return &b.TargetBatchTime }),
	"backfill.sleep":               durSetting(func(b *backfill.Config, _ *throttle.Config) *time.Duration { return &b.Sleep }),
	"backfill.parallelism":         intSetting(func(b *backfill.Config, _ *throttle.Config) *int { return &b.Parallelism }),
	"throttle.max_rows_per_second": intSetting(func(_ *backfill.Config, t *throttle.Config) *int { return &t.MaxRowsPerSecond }),
	"throttle.max_active_sessions": intSetting(func(_ *backfill.Config, t *throttle.Config) *int { return &t.MaxActiveSessions }),
	"throttle.max_replica_lag":     durSetting(func(_ *backfill.Config, t *throttle.Config) *time.Duration { return &t.MaxReplicaLag }),
	"throttle.max_app_lock_wait":   durSetting(func(_ *backfill.Config, t *throttle.Config) *time.Duration { return &t.MaxAppLockWait }),
	"throttle.query": func(v string, _ *backfill.Config, t *throttle.Config) error {
		t.Query = v
		return nil
	},
}

func intSetting(field func(*backfill.Config, *throttle.Config) *int) func(string, *backfill.Config, *throttle.Config) error {
	return func(v string, b *backfill.Config, t *throttle.Config) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", v)
		}
		*field(b, t) = n
		return nil
	}
}

func durSetting(field func(*backfill.Config, *throttle.Config) *time.Duration) func(string, *backfill.Config, *throttle.Config) error {
	return func(v string, b *backfill.Config, t *throttle.Config) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("want a duration such as 200ms, got %q", v)
		}
		*field(b, t) = d
		return nil
	}
}

// TunableKeys lists the keys refit set accepts.
func TunableKeys() []string {
	keys := make([]string, 0, len(Tunables))
	for k := range Tunables {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ApplySettings overlays per-job settings on the base configuration and
// validates the result.
func ApplySettings(settings map[string]string, b backfill.Config, t throttle.Config) (backfill.Config, throttle.Config, error) {
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set, ok := Tunables[k]
		if !ok {
			return b, t, fmt.Errorf("setting %q cannot be tuned (tunable: %s)", k, strings.Join(TunableKeys(), ", "))
		}
		if err := set(settings[k], &b, &t); err != nil {
			return b, t, fmt.Errorf("setting %s: %w", k, err)
		}
	}
	if err := b.Validate(); err != nil {
		return b, t, err
	}
	return b, t, t.Validate()
}

// SettingError is a value ValidateSettings refused after checking it
// against the database: the job's setting Key, or, with Config set, the
// configuration's value of Key that the job would use. Err names the key.
type SettingError struct {
	Key    string
	Config bool
	Err    error
}

func (e *SettingError) Error() string {
	if e.Config {
		return fmt.Sprintf("in the configuration: %v", e.Err)
	}
	return fmt.Sprintf("in the job's settings: %v", e.Err)
}

func (e *SettingError) Unwrap() error { return e.Err }

// ValidateSettings is ApplySettings plus the checks that need the job's
// database, changing nothing there: the throttle query the job would run
// (the setting's, else the configuration's) must pass
// throttle.ValidateQuery. An empty query (set or configured) switches the
// signal off; one of only white space is refused. A refused query is a *SettingError wrapping the
// *throttle.QueryError; other errors (the database could not be asked) are
// returned wrapped as they are.
func ValidateSettings(ctx context.Context, db throttle.DB, settings map[string]string, b backfill.Config, t throttle.Config) (backfill.Config, throttle.Config, error) {
	b, t, err := ApplySettings(settings, b, t)
	if err != nil {
		return b, t, err
	}
	q, set := settings["throttle.query"]
	set = set && q != ""
	if t.Query != "" {
		err := throttle.ValidateQuery(ctx, db, t.Query)
		var qe *throttle.QueryError
		if errors.As(err, &qe) {
			return b, t, &SettingError{Key: "throttle.query", Config: !set, Err: err}
		}
		if err != nil {
			return b, t, fmt.Errorf("check throttle.query: %w", err)
		}
	}
	return b, t, nil
}

// ApplyMigrationSettings is ApplySettings of a migration's settings key on
// top of the configuration, as its job will run; a bad setting is a
// *migration.Error naming the file and the field.
func ApplyMigrationSettings(m *migration.Migration, b backfill.Config, t throttle.Config) (backfill.Config, throttle.Config, error) {
	bf, th, err := ApplySettings(m.Settings, b, t)
	if err != nil {
		return bf, th, &migration.Error{File: m.File, Op: -1, Field: "settings", Msg: err.Error()}
	}
	return bf, th, nil
}

// ValidateMigrationSettings is ApplyMigrationSettings plus the database
// checks of ValidateSettings. A bad setting is a *migration.Error naming
// the file and the field (settings, or settings.<key>) that still wraps its
// cause; a bad configured value keeps its *SettingError.
func ValidateMigrationSettings(ctx context.Context, db throttle.DB, m *migration.Migration, b backfill.Config, t throttle.Config) (backfill.Config, throttle.Config, error) {
	if bf, th, err := ApplyMigrationSettings(m, b, t); err != nil {
		return bf, th, err
	}
	bf, th, err := ValidateSettings(ctx, db, m.Settings, b, t)
	var se *SettingError
	if errors.As(err, &se) && !se.Config {
		return bf, th, &settingsFileError{
			loc:   &migration.Error{File: m.File, Op: -1, Field: "settings." + se.Key, Msg: se.Err.Error()},
			cause: se.Err,
		}
	}
	return bf, th, err
}

// settingsFileError is the *migration.Error of a bad setting in a file
// (what the CLI reports, exiting 2) together with its cause.
type settingsFileError struct {
	loc   *migration.Error
	cause error
}

func (e *settingsFileError) Error() string   { return e.loc.Error() }
func (e *settingsFileError) Unwrap() []error { return []error{e.loc, e.cause} }

// ParseSettings decodes a job's stored settings.
func ParseSettings(raw []byte) (map[string]string, error) {
	out := map[string]string{}
	if len(raw) == 0 {
		return out, nil
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("job settings: %w", err)
	}
	return out, nil
}
