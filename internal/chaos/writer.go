package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// appName is the application_name of the writer's sessions: no fault ever
// targets them.
const appName = "chaos-app"

// server tells the writer whether PostgreSQL is down on purpose. The
// harness calls markDown before it stops the server and markUp once it
// accepts connections again; a write whose connection broke at any other
// time is an error (something ended the application's session).
type server struct {
	mu    sync.Mutex
	epoch int // incremented by every markDown
	down  bool
	up    chan struct{} // closed while the server is up
}

func newServer() *server {
	s := &server{up: make(chan struct{})}
	close(s.up)
	return s
}

func (s *server) markDown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	s.down = true
	s.up = make(chan struct{})
}

func (s *server) markUp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = false
	close(s.up)
}

func (s *server) state() (epoch int, down bool, up <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch, s.down, s.up
}

// rowState is what the application last committed to a row: the old
// columns, and the values it gave volatile-default columns explicitly.
type rowState struct {
	name   string
	qty    int
	tokens map[string]string
}

// shape is what the application version of the moment writes besides the
// old columns: the derived columns of every migration whose window was
// reached before the switch (the new version writes them consistently), and
// the volatile-default columns it may give a value.
type shape struct {
	derived []derived
	tokens  []string
}

// writerStats counts what the writer did. Committed writes include the
// writes of unknown outcome that a read after the restart found committed.
type writerStats struct {
	Inserts, Updates, Deletes int64
	// Unknown writes were sent when the server went away; UnknownCommitted of
	// them were found committed after the restart.
	Unknown, UnknownCommitted int64
	// Retried writes had not been sent when the server went away (the
	// connection could not be had or the request was not written): they were
	// sent again once it was back.
	Retried int64
}

func (s writerStats) committed() int64 { return s.Inserts + s.Updates + s.Deletes }

// writer is the application: workers goroutines on their own pool, each
// owning the ids ≡ its number (mod workers), so that the writes of one row
// are sequential and the ledger's last entry for a row is what the row must
// hold. Every write is a single-row statement in autocommit: it never holds
// one row lock while waiting for another, so it cannot deadlock with refit.
// It sets no lock_timeout or statement_timeout: a write waits behind refit's
// DDL for at most refit's lock_timeout, and never fails because of it.
type writer struct {
	pool    *pgxpool.Pool
	srv     *server
	workers int
	rate    int // writes per second per worker

	gate  sync.RWMutex // held for reading by a write, for writing by pause and setShape
	shape atomic.Pointer[shape]
	seq   atomic.Int64 // makes every name written unique

	mu     sync.Mutex
	ledger map[int64]*rowState
	stats  writerStats
	errs   []error
	nErrs  int64

	live   [][]int64 // per worker: its live ids (touched by that worker only)
	nextID []int64   // per worker: its next insert id

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// newWriter prepares the writer for a table of rows initial rows whose row
// i holds initialName(i), initialQty(i).
func newWriter(pool *pgxpool.Pool, srv *server, rows, workers, rate int) *writer {
	w := &writer{pool: pool, srv: srv, workers: workers, rate: rate, ledger: make(map[int64]*rowState, rows*2),
		live: make([][]int64, workers), nextID: make([]int64, workers)}
	w.shape.Store(&shape{})
	for i := int64(1); i <= int64(rows); i++ {
		w.ledger[i] = &rowState{name: initialName(i), qty: initialQty(i)}
		g := int(i % int64(workers))
		w.live[g] = append(w.live[g], i)
	}
	base := int64(rows) + 1
	for g := range w.nextID {
		id := base
		for int(id%int64(workers)) != g {
			id++
		}
		w.nextID[g] = id
	}
	return w
}

func initialName(i int64) string { return fmt.Sprintf("item %d", i) }
func initialQty(i int64) int     { return int(i % 1000) }

// start runs the workers until stop.
func (w *writer) start(ctx context.Context, seed uint64) {
	ctx, w.cancel = context.WithCancel(ctx)
	for g := 0; g < w.workers; g++ {
		w.wg.Add(1)
		go func(g int) {
			defer w.wg.Done()
			w.loop(ctx, g, rand.New(rand.NewPCG(seed, uint64(g)+1)))
		}(g)
	}
}

// stop ends the workers; a write in flight is abandoned unrecorded (no
// verification follows).
func (w *writer) stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
}

// pause waits for the writes in flight (resolving any of unknown outcome)
// and holds further writes until resume: the table then holds exactly what
// the ledger says.
func (w *writer) pause()  { w.gate.Lock() }
func (w *writer) resume() { w.gate.Unlock() }

// setShape switches the application version; it returns once no write of
// the previous version is in flight.
func (w *writer) setShape(s *shape) {
	w.gate.Lock()
	w.shape.Store(s)
	w.gate.Unlock()
}

func (w *writer) snapshot() (writerStats, int64, []error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats, w.nErrs, append([]error(nil), w.errs...)
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.nErrs++
	if len(w.errs) < 20 {
		w.errs = append(w.errs, err)
	}
}

func (w *writer) loop(ctx context.Context, g int, rng *rand.Rand) {
	tick := time.NewTicker(time.Second / time.Duration(max(w.rate, 1)))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.once(ctx, g, rng)
	}
}

type opKind int

const (
	opInsert opKind = iota
	opUpdate
	opDelete
)

func (k opKind) String() string { return [...]string{"insert", "update", "delete"}[k] }

// op is one write: the row's state before (nil for an insert) and after
// (nil for a delete).
type op struct {
	kind   opKind
	id     int64
	before *rowState
	after  *rowState
	sql    string
	args   []any
	idx    int // position of id in live[g] (update, delete)
}

func (o *op) String() string { return fmt.Sprintf("%s of id %d", o.kind, o.id) }

// choose picks the next write of worker g for the current shape.
func (w *writer) choose(g int, rng *rand.Rand, sh *shape) *op {
	live := w.live[g]
	k := opInsert
	if r := rng.IntN(100); len(live) > 0 && r >= 30 {
		k = opUpdate
		if r >= 92 {
			k = opDelete
		}
	}
	o := &op{kind: k}
	if k != opInsert {
		o.idx = rng.IntN(len(live))
		o.id = live[o.idx]
		w.mu.Lock()
		o.before = w.ledger[o.id]
		w.mu.Unlock()
	} else {
		o.id = w.nextID[g]
	}
	if k == opDelete {
		o.sql, o.args = "DELETE FROM "+table+" WHERE id = $1", []any{o.id}
		return o
	}
	name := fmt.Sprintf("%s %s %d", firstNames[rng.IntN(len(firstNames))], lastNames[rng.IntN(len(lastNames))], w.seq.Add(1))
	qty := rng.IntN(1000)
	if k == opUpdate && rng.IntN(3) == 0 {
		name = o.before.name // a qty-only update, of a qty that differs
		qty = (o.before.qty + 1 + rng.IntN(998)) % 1000
	}
	o.after = &rowState{name: name, qty: qty}
	args := []any{o.id, name, qty}
	// Typed parameters, as drivers and ORMs send them: an untyped $2 used
	// both as name and as $2::text in a derived column would be deduced two
	// ways once alter_column makes name varchar (42P08).
	cols, vals, sets := []string{"id", "name", "qty"}, []string{"$1", "$2::text", "$3::int"}, []string{"name = $2::text", "qty = $3::int"}
	for _, d := range sh.derived {
		cols, vals = append(cols, pgx.Identifier{d.column}.Sanitize()), append(vals, d.app)
		sets = append(sets, pgx.Identifier{d.column}.Sanitize()+" = "+d.app)
	}
	if k == opUpdate {
		o.after.tokens = o.before.tokens // an UPDATE leaves them alone
		o.sql, o.args = fmt.Sprintf("UPDATE %s SET %s WHERE id = $1", table, strings.Join(sets, ", ")), args
		return o
	}
	for _, tok := range sh.tokens {
		if rng.IntN(2) == 0 {
			continue // the default gives it one
		}
		if o.after.tokens == nil {
			o.after.tokens = map[string]string{}
		}
		u := uuidFrom(rng)
		o.after.tokens[tok] = u
		args = append(args, u)
		cols, vals = append(cols, pgx.Identifier{tok}.Sanitize()), append(vals, fmt.Sprintf("$%d::uuid", len(args)))
	}
	o.sql = fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", table, strings.Join(cols, ", "), strings.Join(vals, ", "))
	o.args = args
	return o
}

var (
	firstNames = []string{"Ada", "alan", "Grace", "edsger", "Barbara", "Donald", "frances", "Ken", "Radia", "leslie"}
	lastNames  = []string{"Lovelace", "turing", "Hopper", "Dijkstra", "liskov", "Knuth", "Allen", "thompson", "Perlman", "Lamport"}
)

func uuidFrom(rng *rand.Rand) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// once runs one write and records it in the ledger. A write is retried only
// when PostgreSQL was down before it was sent; one that was sent when the
// server went away has an unknown outcome: once the server is back, the row
// is read and what it holds is recorded (it must be the state before or
// after the write, nothing else).
func (w *writer) once(ctx context.Context, g int, rng *rand.Rand) {
	w.gate.RLock()
	defer w.gate.RUnlock()
	if ctx.Err() != nil {
		return
	}
	o := w.choose(g, rng, w.shape.Load())
	for {
		epoch, _, _ := w.srv.state()
		sent, err := w.exec(ctx, o)
		if err == nil {
			w.record(g, o, true)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if !isGone(err) {
			w.fail(fmt.Errorf("%s: %w", o, err))
			return
		}
		now, down, up := w.srv.state()
		if now == epoch && !down {
			w.fail(fmt.Errorf("%s: the connection was lost while PostgreSQL was not being restarted: %w", o, err))
			return
		}
		select {
		case <-up:
		case <-ctx.Done():
			return
		}
		if !sent {
			w.mu.Lock()
			w.stats.Retried++
			w.mu.Unlock()
			continue
		}
		committed, err := w.resolve(ctx, o)
		if err != nil {
			if ctx.Err() == nil {
				w.fail(fmt.Errorf("%s of unknown outcome: %w", o, err))
			}
			return
		}
		w.mu.Lock()
		w.stats.Unknown++
		if committed {
			w.stats.UnknownCommitted++
		}
		w.mu.Unlock()
		w.record(g, o, committed)
		return
	}
}

// exec runs the write on a connection of its own; sent reports whether the
// request may have reached the server.
func (w *writer) exec(ctx context.Context, o *op) (sent bool, err error) {
	conn, err := w.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	tag, err := conn.Exec(ctx, o.sql, o.args...)
	if err != nil {
		return !pgconn.SafeToRetry(err), err
	}
	if tag.RowsAffected() != 1 {
		return true, fmt.Errorf("%w: %s affected %d rows, the ledger says the row exists", errLedger, tag.String(), tag.RowsAffected())
	}
	return true, nil
}

var errLedger = errors.New("the table disagrees with the ledger")

// resolve reads the row of a write of unknown outcome, after the restart:
// committed if it holds the write's state, not if it holds the state before;
// anything else is an error.
func (w *writer) resolve(ctx context.Context, o *op) (bool, error) {
	for attempt := 1; ; attempt++ {
		var name string
		var qty int
		// The harness's own read, not the application's traffic: not a
		// prepared statement, whose cached result type an alter_column of
		// name changes (docs/migrations.md, alter_column).
		err := w.pool.QueryRow(ctx, "SELECT name, qty FROM "+table+" WHERE id = $1", pgx.QueryExecModeExec, o.id).Scan(&name, &qty)
		var got *rowState
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err == nil:
			got = &rowState{name: name, qty: qty}
		case isGone(err) && attempt < 50:
			// Restarted again meanwhile: wait for it to be back.
			_, _, up := w.srv.state()
			select {
			case <-up:
			case <-ctx.Done():
				return false, ctx.Err()
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return false, err
			}
			continue
		default:
			return false, err
		}
		switch {
		case sameRow(got, o.after):
			return true, nil
		case sameRow(got, o.before):
			return false, nil
		}
		return false, fmt.Errorf("%w: id %d holds %s, neither the state before (%s) nor after (%s) the write",
			errLedger, o.id, describe(got), describe(o.before), describe(o.after))
	}
}

func sameRow(a, b *rowState) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.name == b.name && a.qty == b.qty
}

func describe(r *rowState) string {
	if r == nil {
		return "no row"
	}
	return fmt.Sprintf("(%q, %d)", r.name, r.qty)
}

// record enters a write in the ledger if it committed.
func (w *writer) record(g int, o *op, committed bool) {
	if !committed {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch o.kind {
	case opInsert:
		w.ledger[o.id] = o.after
		w.live[g] = append(w.live[g], o.id)
		w.nextID[g] += int64(w.workers)
		w.stats.Inserts++
	case opUpdate:
		w.ledger[o.id] = o.after
		w.stats.Updates++
	case opDelete:
		delete(w.ledger, o.id)
		live := w.live[g]
		live[o.idx] = live[len(live)-1]
		w.live[g] = live[:len(live)-1]
		w.stats.Deletes++
	}
}

// isGone reports whether err means that the server went away (or could
// not be reached) rather than that it refused the write.
func isGone(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03": // admin_shutdown, crash_shutdown, cannot_connect_now
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection exception
	}
	return !errors.Is(err, errLedger) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
