package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/refit-dev/refit/state"
)

func newStatusCmd(a *app) *cobra.Command {
	var asJSON bool
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
	return cmd
}

// jobView is the JSON form of a job in `refit status --json`: the fields
// scripts use most sit at the top level.
type jobView struct {
	*state.Job
	SyncLagBytes   int64   `json:"sync_lag_bytes"`
	SyncLagSeconds float64 `json:"sync_lag_seconds"`
	ThrottledBy    string  `json:"throttled_by"`
}

func viewOf(j *state.Job) jobView {
	return jobView{Job: j, SyncLagBytes: j.Sync.LagBytes, SyncLagSeconds: j.Sync.LagSeconds, ThrottledBy: j.ThrottledBy}
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
