package worker

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/refit-dev/refit/backfill"
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
