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
				if len(args) == 1 {
					return enc.Encode(jobs[0])
				}
				if jobs == nil {
					jobs = []*state.Job{}
				}
				return enc.Encode(jobs)
			}
			if len(jobs) == 0 {
				fmt.Fprintln(a.out, "no jobs")
				return nil
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tPHASE\tROWS\tCONTRACT\tUPDATED\tERROR")
			for _, j := range jobs {
				rows := fmt.Sprintf("%d/%d", j.RowsDone, j.RowsTotal)
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Name, j.Phase, rows, j.ContractMode,
					j.UpdatedAt.Local().Format("2006-01-02 15:04:05"), oneLine(j.Error))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
