package worker

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/refit-dev/refit/backfill"
	"github.com/refit-dev/refit/state"
)

// Metrics are the daemon's Prometheus metrics. Counters and histograms are
// fed by the jobs this daemon runs; the per-job gauges (sync lag, retained
// WAL, throttle, jobs by phase) are read from the refit schema of each
// target at scrape time, so every replica reports the same, current truth.
type Metrics struct {
	reg       *prometheus.Registry
	rows      *prometheus.CounterVec
	batchDur  *prometheus.HistogramVec
	batchSize *prometheus.GaugeVec
	held      *prometheus.CounterVec
	daemon    *Daemon
}

// NewMetrics creates the registry with refit's metrics and Go's own.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refit_backfill_rows_total",
			Help: "Rows (keys) passed by the backfill, by target and job."}, []string{"target", "job"}),
		batchDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "refit_backfill_batch_duration_seconds",
			Help: "Duration of backfill batches.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"target"}),
		batchSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "refit_backfill_batch_size",
			Help: "Current backfill batch size (rows)."}, []string{"target", "job"}),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refit_backfill_throttled_seconds_total",
			Help: "Time backfill ranges waited on throttle signals, by signal (summed over parallel ranges)."}, []string{"target", "job", "reason"}),
	}
	m.reg.MustRegister(m.rows, m.batchDur, m.batchSize, m.held, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Attach adds the daemon's database-derived metrics.
func (m *Metrics) Attach(d *Daemon) {
	m.daemon = d
	m.reg.MustRegister(&dbCollector{d: d})
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// instrument feeds a runner's batches into the metrics.
func (m *Metrics) instrument(r *Runner, target string) {
	prev := r.OnBatch
	r.OnBatch = func(j *state.Job, p backfill.Progress) {
		job := strconv.FormatInt(j.ID, 10)
		m.rows.WithLabelValues(target, job).Add(float64(p.BatchRows))
		m.batchDur.WithLabelValues(target).Observe(p.BatchTime.Seconds())
		m.batchSize.WithLabelValues(target, job).Set(float64(p.BatchSize))
		if prev != nil {
			prev(j, p)
		}
	}
	prevHeld := r.OnHeld
	r.OnHeld = func(jobID int64, reason string, d time.Duration) {
		m.held.WithLabelValues(target, strconv.FormatInt(jobID, 10), reason).Add(d.Seconds())
		if prevHeld != nil {
			prevHeld(jobID, reason, d)
		}
	}
}

var (
	descLagBytes = prometheus.NewDesc("refit_sync_lag_bytes", "WAL between the server's position and the job slot's confirmed position.", []string{"target", "job", "name"}, nil)
	descLagSecs  = prometheus.NewDesc("refit_sync_lag_seconds", "Commit-to-apply delay of the last applied transaction.", []string{"target", "job", "name"}, nil)
	descRetained = prometheus.NewDesc("refit_slot_retained_wal_bytes", "WAL retained by the job's slot.", []string{"target", "job", "name"}, nil)
	descKeys     = prometheus.NewDesc("refit_sync_keys_applied", "Dirty keys applied from the stream by the job's current sync.", []string{"target", "job", "name"}, nil)
	descThrottle = prometheus.NewDesc("refit_throttled", "1 while the job's backfill is throttled, by reason.", []string{"target", "job", "name", "reason"}, nil)
	descPhase    = prometheus.NewDesc("refit_jobs", "Jobs by phase.", []string{"target", "phase"}, nil)
	descRows     = prometheus.NewDesc("refit_job_rows_done", "Rows done by the job's backfill (from its checkpoints).", []string{"target", "job", "name"}, nil)
	descRetries  = prometheus.NewDesc("refit_ddl_lock_retries_total", "DDL statements retried after a lock timeout or deadlock, by this worker.", []string{"target"}, nil)
	descUp       = prometheus.NewDesc("refit_target_up", "1 when the target is connected and its jobs could be read.", []string{"target"}, nil)
)

type dbCollector struct{ d *Daemon }

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLagBytes, descLagSecs, descRetained, descKeys, descThrottle, descPhase, descRows, descRetries, descUp} {
		ch <- d
	}
}

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, t := range c.d.connected() {
		ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(t.ddl.Retries()), t.name)
		jobs, err := t.store.List(ctx)
		if err != nil {
			ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0, t.name)
			continue
		}
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1, t.name)
		byPhase := map[string]int{}
		for p := state.PhasePending; p <= state.PhaseAborted; p++ {
			byPhase[p.String()] = 0
		}
		for _, j := range jobs {
			byPhase[j.Phase.String()]++
			if j.Phase.Terminal() {
				continue
			}
			id := strconv.FormatInt(j.ID, 10)
			ch <- prometheus.MustNewConstMetric(descRows, prometheus.GaugeValue, float64(j.RowsDone), t.name, id, j.Name)
			ch <- prometheus.MustNewConstMetric(descLagBytes, prometheus.GaugeValue, float64(j.Sync.LagBytes), t.name, id, j.Name)
			ch <- prometheus.MustNewConstMetric(descLagSecs, prometheus.GaugeValue, j.Sync.LagSeconds, t.name, id, j.Name)
			ch <- prometheus.MustNewConstMetric(descRetained, prometheus.GaugeValue, float64(j.Sync.RetainedBytes), t.name, id, j.Name)
			ch <- prometheus.MustNewConstMetric(descKeys, prometheus.GaugeValue, float64(j.Sync.KeysApplied), t.name, id, j.Name)
			if j.ThrottledBy != "" {
				ch <- prometheus.MustNewConstMetric(descThrottle, prometheus.GaugeValue, 1, t.name, id, j.Name, j.ThrottledBy)
			}
		}
		for p, n := range byPhase {
			ch <- prometheus.MustNewConstMetric(descPhase, prometheus.GaugeValue, float64(n), t.name, p)
		}
	}
}
