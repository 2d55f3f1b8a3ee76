package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestBenchParsePeer(t *testing.T) {
	p, err := parsePeer("pgroll=/opt/bin/pgroll")
	if err != nil {
		t.Fatal(err)
	}
	if p != (peerSpec{Tool: "pgroll", Path: "/opt/bin/pgroll"}) {
		t.Fatalf("parsePeer = %+v", p)
	}
	if p.database() != "pgroll_bench" {
		t.Fatalf("database = %q", p.database())
	}
	for _, bad := range []string{"pgroll", "pgroll=", "=/x", "gh-ost=/usr/bin/gh-ost", ""} {
		if _, err := parsePeer(bad); err == nil {
			t.Errorf("parsePeer(%q) accepted", bad)
		}
	}
}

func TestBenchParseVersions(t *testing.T) {
	for in, want := range map[string][]int{
		"":                 nil,
		"17":               {17},
		"14,15,16,17,18":   {14, 15, 16, 17, 18},
		" 18 , 14":         {18, 14},
		"16,15":            {16, 15},
		"14, 15,16 ,17,18": {14, 15, 16, 17, 18},
	} {
		got, err := parseVersions(in)
		if err != nil {
			t.Errorf("parseVersions(%q): %v", in, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("parseVersions(%q) = %v, want %v", in, got, want)
		}
	}
	for _, bad := range []string{"13", "19", "15,15", "15,,16", "x", "15;16"} {
		if _, err := parseVersions(bad); err == nil {
			t.Errorf("parseVersions(%q) accepted", bad)
		}
	}
}

// TestBenchFlagErrors: bad --peer and --versions are usage errors, refused
// before any PostgreSQL is started.
func TestBenchFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--peer", "pgroll"},
		{"bench", "--peer", "liquibase=/usr/bin/liquibase"},
		{"bench", "--versions", "12"},
		{"bench", "--versions", "16,16"},
	} {
		var out, errOut bytes.Buffer
		a := &app{out: &out, errOut: &errOut}
		root := newRoot(a)
		root.SetArgs(args)
		root.SetOut(&out)
		root.SetErr(&errOut)
		err := root.ExecuteContext(context.Background())
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
		if strings.Contains(errOut.String(), "starting a throwaway PostgreSQL") {
			t.Errorf("%v: a cluster was started:\n%s", args, errOut.String())
		}
	}
}

func TestBenchParsePgFetch(t *testing.T) {
	out := []byte("15 /var/cache/refit/pg/15.18.0-beta.17/bin\n17 /var/cache/refit/pg/17.10.0-beta.17/bin\n")
	dirs, err := parsePgFetch(out, []int{17, 15})
	if err != nil {
		t.Fatal(err)
	}
	if dirs[15] != "/var/cache/refit/pg/15.18.0-beta.17/bin" || dirs[17] != "/var/cache/refit/pg/17.10.0-beta.17/bin" {
		t.Fatalf("dirs = %v", dirs)
	}
	if _, err := parsePgFetch(out, []int{16}); err == nil {
		t.Fatal("a missing major was accepted")
	}
}

func TestBenchParseVmHWM(t *testing.T) {
	status := []byte("Name:\tpgroll\nVmPeak:\t 1300000 kB\nVmHWM:\t   23040 kB\nVmRSS:\t   21000 kB\n")
	kib, ok := parseVmHWM(status)
	if !ok || kib != 23040 {
		t.Fatalf("parseVmHWM = %d, %v", kib, ok)
	}
	if _, ok := parseVmHWM([]byte("Name:\tzombie\nState:\tZ (zombie)\n")); ok {
		t.Fatal("VmHWM found in a status without one")
	}
}

// benchWithPeer is a result with a peer, figures chosen so that each target
// line has a known verdict.
func benchWithPeer() benchResult {
	return benchResult{
		Rows: 1000000, PostgresVersion: 15, WriterRate: 500,
		SingleUpdateS: 4, SingleUpdateRowsS: 250000,
		BackfillS: 5, BackfillRowsS: 200000, BackfillRatio: 0.8,
		Baseline:       latency{Count: 5000, P50ms: 0.4, P99ms: 1.0, MaxMS: 9},
		DuringBackfill: latency{Count: 2500, P50ms: 0.5, P99ms: 4.0, MaxMS: 30},
		DuringWindow:   latency{Count: 2500, P50ms: 0.45, P99ms: 1.1, MaxMS: 4},
		SyncLag:        latency{Count: 5000, P50ms: 30, P99ms: 210, MaxMS: 260},
		MaxLockWaitMS:  40, LockTimeoutMS: 1000, PeakRSSMiB: 21,
		Peer: &peerResult{
			Tool: "pgroll", ToolVersion: "pgroll version v0.16.2", Database: "pgroll_bench", WriterSearchPath: "public",
			StartS: 41, BackfillS: 40, BackfillMeasure: "sampled batches", BackfillRowsS: 25000, BackfillRatio: 0.1, RefitVsPeer: 8,
			CompleteS:      3.5,
			Baseline:       latency{Count: 5000, P50ms: 0.41, P99ms: 1.2, MaxMS: 8},
			DuringBackfill: latency{Count: 20000, P50ms: 0.9, P99ms: 6.5, MaxMS: 120},
			DuringWindow:   latency{Count: 2500, P50ms: 0.7, P99ms: 2.4, MaxMS: 11},
			WriterErrors:   3, WriterLastErr: "check constraint",
			MaxLockWaitMS: 250, LockTimeoutMS: 500, PeakRSSMiB: 31.5,
			Rows: 1020000,
		},
	}
}

func TestBenchRenderPeer(t *testing.T) {
	var md bytes.Buffer
	printBench(&md, benchWithPeer())
	s := md.String()
	for _, want := range []string{
		"### refit and pgroll side by side",
		"`pgroll version v0.16.2`; its old application writes with search_path public.",
		"| backfill, writer running (single UPDATE 250000 rows/s) | 5.00 s (200000 rows/s, 0.80× single UPDATE) | 40.00 s (25000 rows/s, 0.10× single UPDATE; sampled batches) |",
		"| refit's backfill rate over pgroll's | 8.00× | |",
		"| writer, in the window | p50 0.45 ms · p99 1.10 ms · max 4.00 ms (n=2500) (p99 1.10× baseline) | p50 0.70 ms · p99 2.40 ms · max 11.00 ms (n=2500) (p99 2.00× baseline) |",
		"| writer errors during the migration | 0 | 3 (last: check constraint) |",
		"| longest wait of any session on the tool's locks (sampled every 10 ms) | 40.0 ms (lock_timeout 1000 ms) | 250.0 ms (lock_timeout 500 ms) |",
		"| peak RSS | 21.0 MiB (bench process: refit + writer + sampler) | 31.5 MiB (highest of its processes) |",
		"| rows with wrong new columns after complete | | 0 of 1020000 |",
		"| refit backfill with the writer ≥ 0.9× single UPDATE | 0.80× | **not met** |",
		"| refit backfill ≥ 3× pgroll's rate, same run | 8.00× | met |",
		"| refit writer p99 in the window ≤ 1.2× baseline | 1.10× (1.10 ms vs 1.00 ms) | met |",
		"| refit peak RSS < 50 MB | 21.0 MiB (22.0 MB) | met |",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("markdown lacks %q\n%s", want, s)
		}
	}

	b, err := json.Marshal(benchWithPeer())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	peer, ok := doc["peer"].(map[string]any)
	if !ok {
		t.Fatalf("JSON has no peer object: %s", b)
	}
	for key, want := range map[string]any{
		"tool": "pgroll", "backfill_rows_per_s": 25000.0, "refit_backfill_vs_peer": 8.0,
		"max_lock_wait_on_peer_ms": 250.0, "peak_rss_mib": 31.5, "writer_errors": 3.0,
		"rows_with_wrong_new_columns": 0.0, "writer_search_path": "public",
	} {
		if peer[key] != want {
			t.Errorf("peer.%s = %v, want %v", key, peer[key], want)
		}
	}
	if w, ok := peer["writer_during_window"].(map[string]any); !ok || w["p99_ms"] != 2.4 {
		t.Errorf("peer.writer_during_window = %v", peer["writer_during_window"])
	}
}

// TestBenchRenderWithoutPeer: without --peer the output is refit's alone.
func TestBenchRenderWithoutPeer(t *testing.T) {
	r := benchWithPeer()
	r.Peer = nil
	var md bytes.Buffer
	printBench(&md, r)
	if strings.Contains(md.String(), "side by side") || strings.Contains(md.String(), "target") {
		t.Fatalf("peer sections without a peer:\n%s", md.String())
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(`"peer"`)) {
		t.Fatalf("JSON has a peer key: %s", b)
	}
}

func TestBenchRenderVersionSummary(t *testing.T) {
	a, b := benchWithPeer(), benchWithPeer()
	b.PostgresVersion, b.Peer = 17, nil
	var md bytes.Buffer
	printVersionSummary(&md, []benchResult{a, b})
	s := md.String()
	for _, want := range []string{
		"| 15 | 250000 | 200000 rows/s (0.80×) | 1.00 → 1.10 ms (1.10×) | 210.0 ms | 21.0 MiB | 25000 rows/s (0.10×) | 8.00× | 1.20 → 2.40 ms (2.00×) | 31.5 MiB |",
		"| 17 | 250000 | 200000 rows/s (0.80×) | 1.00 → 1.10 ms (1.10×) | 210.0 ms | 21.0 MiB | | | |",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q\n%s", want, s)
		}
	}
}

// TestBenchPeerPgroll runs the real bench with a real pgroll binary, named
// by REFIT_BENCH_PGROLL (there is no fake pgroll: the figures would mean
// nothing). It checks the run's shape, not its speed.
func TestBenchPeerPgroll(t *testing.T) {
	pgroll := os.Getenv("REFIT_BENCH_PGROLL")
	if pgroll == "" {
		t.Skip("REFIT_BENCH_PGROLL names no pgroll binary")
	}
	out := filepath.Join(t.TempDir(), "bench.json")
	r := runRefit(t, nil, "bench", "--rows", "2000", "--baseline", "1s", "--window", "1s", "--peer", "pgroll="+pgroll, "--json", out)
	if r.code != 0 {
		t.Fatalf("bench exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "### refit and pgroll side by side") {
		t.Fatalf("no side-by-side section:\n%s", r.stdout)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res benchResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	p := res.Peer
	if p == nil {
		t.Fatalf("no peer in %s", b)
	}
	if p.Rows < 2000 || p.WrongRows != 0 {
		t.Errorf("pgroll left %d of %d rows wrong", p.WrongRows, p.Rows)
	}
	if p.BackfillS <= 0 || p.StartS < p.BackfillS || p.PeakRSSMiB <= 0 || p.Baseline.Count == 0 || p.DuringWindow.Count == 0 {
		t.Errorf("peer figures missing: %+v", p)
	}
}
