package main

import (
	"fmt"
	"io"
)

// Targets of issue 12 that `refit bench --peer` checks.
const (
	targetBackfillVsSingle = 0.9  // backfill with the writer ≥ 0.9× a single UPDATE
	targetRefitVsPeer      = 3.0  // ≥ 3× the peer's backfill rate in the same run
	targetWindowP99        = 1.2  // writer p99 in the window ≤ 1.2× its baseline
	targetPeakRSSBytes     = 50e6 // peak RSS < 50 MB
)

// printPeer renders the side-by-side section of a bench with a peer, and the
// targets it checks.
func printPeer(w io.Writer, r benchResult) {
	p := r.Peer
	fmt.Fprintf(w, "\n### refit and %s side by side (same run, same cluster, identical tables, same writer)\n\n", p.Tool)
	fmt.Fprintf(w, "%s: `%s`; its old application writes with search_path %s.\n\n", p.Tool, p.ToolVersion, p.WriterSearchPath)
	fmt.Fprintf(w, "| measure | refit | %s |\n", p.Tool)
	fmt.Fprintln(w, "|---|---|---|")
	fmt.Fprintf(w, "| backfill, writer running (single UPDATE %.0f rows/s) | %.2f s (%.0f rows/s, %.2f× single UPDATE) | %.2f s (%.0f rows/s, %.2f× single UPDATE; %s) |\n",
		r.SingleUpdateRowsS, r.BackfillS, r.BackfillRowsS, r.BackfillRatio, p.BackfillS, p.BackfillRowsS, p.BackfillRatio, p.BackfillMeasure)
	fmt.Fprintf(w, "| refit's backfill rate over %s's | %.2f× | |\n", p.Tool, p.RefitVsPeer)
	fmt.Fprintf(w, "| expand → end of backfill | | %.2f s (`%s start`) |\n", p.StartS, p.Tool)
	fmt.Fprintf(w, "| writer, no migration | %s | %s |\n", latencyText(r.Baseline), latencyText(p.Baseline))
	fmt.Fprintf(w, "| writer, during the backfill | %s | %s |\n", latencyText(r.DuringBackfill), latencyText(p.DuringBackfill))
	fmt.Fprintf(w, "| writer, in the window | %s (p99 %.2f× baseline) | %s (p99 %.2f× baseline) |\n",
		latencyText(r.DuringWindow), ratio(r.DuringWindow.P99ms, r.Baseline.P99ms), latencyText(p.DuringWindow), ratio(p.DuringWindow.P99ms, p.Baseline.P99ms))
	fmt.Fprintf(w, "| writer errors during the migration | %d%s | %d%s |\n", r.WriterErrors, lastErrText(r.WriterLastErr), p.WriterErrors, lastErrText(p.WriterLastErr))
	fmt.Fprintf(w, "| sync lag, commit → new columns applied | p50 %.1f ms · p99 %.1f ms · max %.1f ms | — (triggers, in the writer's transaction) |\n",
		r.SyncLag.P50ms, r.SyncLag.P99ms, r.SyncLag.MaxMS)
	fmt.Fprintf(w, "| longest wait of any session on the tool's locks (sampled every 10 ms) | %.1f ms (lock_timeout %.0f ms) | %.1f ms (lock_timeout %.0f ms) |\n",
		r.MaxLockWaitMS, r.LockTimeoutMS, p.MaxLockWaitMS, p.LockTimeoutMS)
	fmt.Fprintf(w, "| complete | | %.2f s |\n", p.CompleteS)
	fmt.Fprintf(w, "| peak RSS | %.1f MiB (bench process: refit + writer + sampler) | %.1f MiB (highest of its processes) |\n", r.PeakRSSMiB, p.PeakRSSMiB)
	fmt.Fprintf(w, "| rows with wrong new columns after complete | | %d of %d |\n", p.WrongRows, p.Rows)

	fmt.Fprintln(w, "\n| target (issue 12) | figure | |")
	fmt.Fprintln(w, "|---|---|---|")
	fmt.Fprintf(w, "| refit backfill with the writer ≥ %.1f× single UPDATE | %.2f× | %s |\n",
		targetBackfillVsSingle, r.BackfillRatio, met(r.BackfillRatio >= targetBackfillVsSingle))
	fmt.Fprintf(w, "| refit backfill ≥ %.0f× %s's rate, same run | %.2f× | %s |\n",
		targetRefitVsPeer, p.Tool, p.RefitVsPeer, met(p.RefitVsPeer >= targetRefitVsPeer))
	wr := ratio(r.DuringWindow.P99ms, r.Baseline.P99ms)
	fmt.Fprintf(w, "| refit writer p99 in the window ≤ %.1f× baseline | %.2f× (%.2f ms vs %.2f ms) | %s |\n",
		targetWindowP99, wr, r.DuringWindow.P99ms, r.Baseline.P99ms, met(wr > 0 && wr <= targetWindowP99))
	fmt.Fprintf(w, "| refit peak RSS < 50 MB | %.1f MiB (%.1f MB) | %s |\n",
		r.PeakRSSMiB, r.PeakRSSMiB*1048576/1e6, met(r.PeakRSSMiB > 0 && r.PeakRSSMiB*1048576 < targetPeakRSSBytes))
}

// printVersionSummary renders one line per PostgreSQL version.
func printVersionSummary(w io.Writer, rs []benchResult) {
	fmt.Fprintln(w, "## refit bench — per PostgreSQL version")
	fmt.Fprintln(w)
	peer := ""
	for _, r := range rs {
		if r.Peer != nil {
			peer = r.Peer.Tool
		}
	}
	if peer == "" {
		fmt.Fprintln(w, "| PostgreSQL | single UPDATE rows/s | refit backfill (× single UPDATE) | writer p99 baseline → window | sync lag p99 | peak RSS |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|")
	} else {
		fmt.Fprintf(w, "| PostgreSQL | single UPDATE rows/s | refit backfill (× single UPDATE) | writer p99 baseline → window | sync lag p99 | peak RSS | %[1]s backfill (× single UPDATE) | refit ÷ %[1]s | %[1]s writer p99 baseline → window | %[1]s peak RSS |\n", peer)
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	}
	for _, r := range rs {
		fmt.Fprintf(w, "| %d | %.0f | %.0f rows/s (%.2f×) | %.2f → %.2f ms (%.2f×) | %.1f ms | %.1f MiB |",
			r.PostgresVersion, r.SingleUpdateRowsS, r.BackfillRowsS, r.BackfillRatio,
			r.Baseline.P99ms, r.DuringWindow.P99ms, ratio(r.DuringWindow.P99ms, r.Baseline.P99ms), r.SyncLag.P99ms, r.PeakRSSMiB)
		if p := r.Peer; p != nil {
			fmt.Fprintf(w, " %.0f rows/s (%.2f×) | %.2f× | %.2f → %.2f ms (%.2f×) | %.1f MiB |",
				p.BackfillRowsS, p.BackfillRatio, p.RefitVsPeer, p.Baseline.P99ms, p.DuringWindow.P99ms,
				ratio(p.DuringWindow.P99ms, p.Baseline.P99ms), p.PeakRSSMiB)
		} else if peer != "" {
			fmt.Fprint(w, " | | | |")
		}
		fmt.Fprintln(w)
	}
}

func latencyText(l latency) string {
	return fmt.Sprintf("p50 %.2f ms · p99 %.2f ms · max %.2f ms (n=%d)", l.P50ms, l.P99ms, l.MaxMS, l.Count)
}

func lastErrText(s string) string {
	if s == "" {
		return ""
	}
	return " (last: " + s + ")"
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}
