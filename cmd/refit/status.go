package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/state"
)

func newStatusCmd(a *app) *cobra.Command {
	var asJSON, watch bool
	cmd := &cobra.Command{
		Use:   "status [JOB]",
		Short: "Show jobs and their progress",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			pool, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer pool.Close()
			if watch {
				if len(args) != 1 {
					return usageError{errors.New("--watch needs a JOB")}
				}
				return a.watch(ctx, pool, args[0])
			}
			exists, err := state.Exists(ctx, pool)
			if err != nil {
				return err
			}
			var jobs []*state.Job
			if exists {
				store, err := state.Open(ctx, pool)
				if err != nil {
					return err
				}
				if len(args) == 1 {
					j, err := store.Find(ctx, args[0])
					if err != nil {
						return fmt.Errorf("job %s: %w", args[0], err)
					}
					jobs = append(jobs, j)
				} else if jobs, err = store.List(ctx); err != nil {
					return err
				}
			} else if len(args) == 1 {
				return fmt.Errorf("job %s: %w (refit has never run on this database)", args[0], state.ErrNotFound)
			}
			if asJSON {
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				views := make([]jobView, len(jobs))
				for i, j := range jobs {
					views[i] = viewOf(j)
				}
				if len(args) == 1 {
					return enc.Encode(views[0])
				}
				return enc.Encode(views)
			}
			if len(jobs) == 0 {
				fmt.Fprintln(a.out, "no jobs")
				return nil
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tPHASE\tROWS\tSYNC LAG\tKEYS SYNCED\tTHROTTLED BY\tCONTRACT\tUPDATED\tERROR")
			for _, j := range jobs {
				rows := fmt.Sprintf("%d/%d", j.RowsDone, j.RowsTotal)
				lag := "-"
				if j.Sync.ConfirmedLSN != "" && !j.Phase.Terminal() {
					lag = fmt.Sprintf("%s, %.0f ms", bytesHuman(j.Sync.LagBytes), j.Sync.LagSeconds*1000)
					if j.Sync.OriginFilter != "" {
						lag += ", filter " + j.Sync.OriginFilter
					}
				}
				throttled := j.ThrottledBy
				if throttled == "" {
					throttled = "-"
				}
				gate := j.ContractMode
				if j.ContractOpen {
					gate += " (gate open)"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", j.ID, j.Name, j.Phase, rows, lag, j.Sync.KeysApplied,
					throttled, gate, j.UpdatedAt.Local().Format("2006-01-02 15:04:05"), oneLine(j.Error))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&watch, "watch", false, "follow one job: a live progress line every second until it ends")
	return cmd
}

// jobView is the JSON form of a job in `refit status --json` (and the
// worker's /jobs): the fields scripts use most sit at the top level.
type jobView struct {
	*state.Job
	// Settings shadows the job's stored bytes, which encoding/json would
	// print as base64: the JSON object itself, {} when there is none.
	Settings       json.RawMessage `json:"settings"`
	SyncLagBytes   int64           `json:"sync_lag_bytes"`
	SyncLagSeconds float64         `json:"sync_lag_seconds"`
	ThrottledBy    string          `json:"throttled_by"`
}

func viewOf(j *state.Job) jobView {
	settings := json.RawMessage(j.Settings)
	if len(bytes.TrimSpace(settings)) == 0 {
		settings = json.RawMessage("{}")
	}
	return jobView{Job: j, Settings: settings, SyncLagBytes: j.Sync.LagBytes, SyncLagSeconds: j.Sync.LagSeconds, ThrottledBy: j.ThrottledBy}
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// watch prints a live progress line for one job until it completes, is
// aborted, or fails.
func (a *app) watch(ctx context.Context, pool *pgxpool.Pool, ref string) error {
	store, err := state.Open(ctx, pool)
	if err != nil {
		return err
	}
	var lastRows int64
	var lastAt time.Time
	for {
		j, err := store.Find(ctx, ref)
		if err != nil {
			return fmt.Errorf("job %s: %w", ref, err)
		}
		now := time.Now()
		rate := 0.0
		if !lastAt.IsZero() {
			rate = float64(j.RowsDone-lastRows) / now.Sub(lastAt).Seconds()
		}
		lastRows, lastAt = j.RowsDone, now
		fmt.Fprintln(a.out, progressLine(j, rate))
		if j.Phase.Terminal() || j.Phase == state.PhaseFailed {
			if j.Phase == state.PhaseFailed {
				return fmt.Errorf("job %d failed: %s", j.ID, j.Error)
			}
			return nil
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func progressLine(j *state.Job, rate float64) string {
	const width = 30
	pct := 0.0
	if j.RowsTotal > 0 {
		pct = min(1, float64(j.RowsDone)/float64(j.RowsTotal))
	}
	if j.Phase > state.PhaseBackfilling && !j.Phase.Terminal() && j.Phase != state.PhasePaused && j.Phase != state.PhaseFailed {
		pct = 1
	}
	filled := int(pct * width)
	bar := strings.Repeat("█", filled) + strings.Repeat("░", width-filled)
	eta := "-"
	if rate > 0 && j.RowsTotal > j.RowsDone {
		eta = (time.Duration(float64(j.RowsTotal-j.RowsDone)/rate) * time.Second).Round(time.Second).String()
	}
	line := fmt.Sprintf("%-11s %s %5.1f%% %d/%d rows %.0f rows/s ETA %s · sync lag %s %.0f ms · %d keys synced",
		j.Phase, bar, pct*100, j.RowsDone, j.RowsTotal, rate, eta, bytesHuman(j.Sync.LagBytes), j.Sync.LagSeconds*1000, j.Sync.KeysApplied)
	if j.Sync.OriginFilter != "" && j.Phase >= state.PhaseBackfilling && !j.Phase.Terminal() {
		line += " · refit's writes filtered by the " + j.Sync.OriginFilter
	}
	if j.ThrottledBy != "" {
		line += " · throttled by " + j.ThrottledBy
	}
	if j.Phase == state.PhaseSyncing && !j.ContractOpen {
		line += " · waiting for the contract gate (" + j.ContractMode + ")"
	}
	return line
}
