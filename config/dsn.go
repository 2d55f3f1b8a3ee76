package config

import (
	"errors"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// What RedactDSN shows instead of a description.
const (
	// UnparseableDSN stands for a DSN that pgx cannot parse: no part of it
	// is shown, since the parser could not tell where the password is.
	UnparseableDSN = "<unparseable DSN>"
	// HiddenDSN stands for a DSN that parses but whose description would
	// show (part of) its password: a URL with an unencoded '@' outside its
	// user:password@ part (the password may have been split into host,
	// path or query), or a user, host or database containing the password.
	HiddenDSN = "<DSN not shown: it may contain a password>"
)

// ErrUnparseableDSN is what RedactError reports (errors.Is) instead of an
// error about a connection string that does not parse.
var ErrUnparseableDSN = errors.New("cannot parse the connection string (it is not shown because it may contain a password; " +
	"in a URL, percent-encode the password's special characters such as % @ / ? #)")

// errAmbiguousDSN replaces every error about a URL whose password may have
// been split into other fields by an unencoded '@'.
var errAmbiguousDSN = errors.New("the connection string has an unencoded '@' outside its user:password@ part, so its password " +
	"may have been split into other fields; the error is not shown because it may contain part of the password " +
	"(percent-encode '@' as %40)")

// mask replaces a password in error text.
const mask = "xxxxx"

// RedactDSN describes the target of a DSN (URL or keyword/value form) for
// logs and errors: user, host(s), port(s) and database as pgx parses them,
// environment (PGHOST, PGUSER, …) included, e.g.
//
//	user=app host=db1,db2 port=5432 dbname=app
//
// It never contains the password nor any raw text of the DSN: a DSN that
// does not parse is UnparseableDSN, and one whose description could reveal
// its password is HiddenDSN.
func RedactDSN(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return UnparseableDSN
	}
	if strandedURL(dsn) {
		return HiddenDSN
	}
	desc := describe(cfg)
	for _, s := range secrets(dsn, cfg) {
		if strings.Contains(desc, s) {
			return HiddenDSN
		}
	}
	return desc
}

// RedactError returns err with every form of dsn's password removed from
// its message: the raw DSN, the password as written (percent-encoded,
// quoted, escaped) and as parsed (also from PGPASSWORD, .pgpass or a
// service file). An error about dsn not parsing (pgx quotes the connection
// string, redacted only on a best-effort basis) becomes ErrUnparseableDSN.
//
// An error whose message holds no password is returned as is. Otherwise the
// result is a new error: errors.Is still matches the original chain
// (context.Canceled, ErrUnparseableDSN, …), and errors.As finds a
// *pgconn.PgError whose text fields are redacted the same way, but the
// original error is not reachable by Unwrap.
func RedactError(err error, dsn string) error {
	if err == nil {
		return nil
	}
	if _, done := err.(*dsnError); done { //nolint:errorlint // only err itself: a wrapper's text may hold the password
		return err
	}
	var parseErr *pgconn.ParseConfigError
	if errors.As(err, &parseErr) {
		return &dsnError{msg: ErrUnparseableDSN.Error(), orig: err, unparseable: true}
	}
	cfg, perr := pgconn.ParseConfig(dsn)
	if perr != nil {
		// The password's position is unknown: nothing can be redacted.
		return &dsnError{msg: ErrUnparseableDSN.Error(), orig: err, unparseable: true}
	}
	if strandedURL(dsn) {
		return &dsnError{msg: errAmbiguousDSN.Error(), orig: err}
	}
	scrub := scrubber(secrets(dsn, cfg))
	msg := err.Error()
	red := scrub.Replace(msg)
	if red == msg {
		return err
	}
	return &dsnError{msg: red, orig: err, scrub: scrub}
}

// dsnError is an error whose message was redacted. It does not unwrap: the
// original's message holds the password.
type dsnError struct {
	msg         string
	orig        error
	unparseable bool
	scrub       *strings.Replacer // nil: nothing of orig may be shown
}

func (e *dsnError) Error() string { return e.msg }

// Is matches ErrUnparseableDSN for a parse failure, and whatever the
// original error matches.
func (e *dsnError) Is(target error) bool {
	if target == ErrUnparseableDSN {
		return e.unparseable
	}
	return errors.Is(e.orig, target)
}

// As finds a *pgconn.PgError of the original chain, as a redacted copy.
func (e *dsnError) As(target any) bool {
	t, ok := target.(**pgconn.PgError)
	if !ok || e.scrub == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if !errors.As(e.orig, &pgErr) {
		return false
	}
	c := *pgErr
	for _, f := range []*string{&c.Message, &c.Detail, &c.Hint, &c.Where, &c.InternalQuery} {
		*f = e.scrub.Replace(*f)
	}
	*t = &c
	return true
}

// describe renders the parsed target in keyword/value syntax.
func describe(cfg *pgconn.Config) string {
	type hostPort struct {
		host string
		port uint16
	}
	all := []hostPort{{cfg.Host, cfg.Port}}
	for _, fb := range cfg.Fallbacks {
		all = append(all, hostPort{fb.Host, fb.Port})
	}
	var hosts, ports []string
	seen := map[hostPort]bool{}
	samePort := true
	for _, hp := range all {
		if seen[hp] {
			continue // a TLS fallback of the same host
		}
		seen[hp] = true
		hosts = append(hosts, hp.host)
		ports = append(ports, strconv.Itoa(int(hp.port)))
		samePort = samePort && hp.port == cfg.Port
	}
	if samePort {
		ports = ports[:1]
	}
	var b strings.Builder
	for _, kv := range [][2]string{
		{"user", cfg.User},
		{"host", strings.Join(hosts, ",")},
		{"port", strings.Join(ports, ",")},
		{"dbname", cfg.Database},
	} {
		if kv[1] == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv[0] + "=" + quoteValue(kv[1]))
	}
	return b.String()
}

// quoteValue quotes a keyword/value value when it needs it.
func quoteValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\v\f'\\") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// strandedURL reports whether dsn is a URL with an unencoded '@' after the
// userinfo pgx recognizes (the text up to the first '@' before any '/'): a
// password containing '@', '/' or '?' then spills into host, port, path or
// query, where neither the parser nor a redactor can tell it apart.
func strandedURL(dsn string) bool {
	rest, ok := cutScheme(dsn)
	if !ok {
		return false
	}
	if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
		rest = rest[i+1:]
	}
	return strings.Contains(rest, "@")
}

func cutScheme(dsn string) (string, bool) {
	for _, prefix := range []string{"postgresql://", "postgres://"} {
		if rest, ok := strings.CutPrefix(dsn, prefix); ok {
			return rest, true
		}
	}
	return "", false
}

// secrets returns every form in which dsn's passwords (password and
// sslpassword) may appear in text, longest first.
func secrets(dsn string, cfg *pgconn.Config) []string {
	set := map[string]bool{}
	add := func(s string) {
		if s == "" {
			return
		}
		set[s] = true
		// As other code may have printed it.
		set[url.QueryEscape(s)] = true
		set[url.PathEscape(s)] = true
		set[strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)] = true
		if q := strconv.Quote(s); len(q) > 2 {
			set[q[1:len(q)-1]] = true
		}
	}
	add(dsn)
	add(cfg.Password)
	for _, v := range writtenPasswords(dsn) {
		add(v)
	}
	delete(set, "")
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i]) != len(out[j]) {
			return len(out[i]) > len(out[j])
		}
		return out[i] < out[j]
	})
	return out
}

// scrubber replaces every secret with the mask in one pass, the longest
// match first.
func scrubber(secrets []string) *strings.Replacer {
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		pairs = append(pairs, s, mask)
	}
	return strings.NewReplacer(pairs...)
}

// writtenPasswords returns the password and sslpassword values of dsn, both
// as written and decoded, following pgx's URL and keyword/value syntax.
func writtenPasswords(dsn string) []string {
	isSecret := func(key string) bool { return key == "password" || key == "sslpassword" }
	var out []string
	if rest, ok := cutScheme(dsn); ok {
		if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
			if _, pw, has := strings.Cut(rest[:i], ":"); has {
				out = append(out, pw)
				if dec, err := url.PathUnescape(pw); err == nil {
					out = append(out, dec)
				}
			}
			rest = rest[i+1:]
		}
		if _, query, has := strings.Cut(rest, "?"); has {
			for pair := range strings.SplitSeq(query, "&") {
				k, v, _ := strings.Cut(pair, "=")
				if dk, err := url.PathUnescape(k); err == nil {
					k = dk
				}
				if isSecret(k) {
					out = append(out, v)
					if dec, err := url.PathUnescape(v); err == nil {
						out = append(out, dec)
					}
				}
			}
		}
		return out
	}
	for _, kv := range keywordValues(dsn) {
		if isSecret(kv.key) {
			out = append(out, kv.raw, kv.value)
		}
	}
	return out
}

type keywordValue struct{ key, raw, value string }

// keywordValues splits a keyword/value DSN the way pgx does (raw is the
// value as written, without its quotes; value is unescaped). It stops at
// the first syntax error.
func keywordValues(s string) []keywordValue {
	const space = " \t\n\r\v\f"
	var out []keywordValue
	s = strings.TrimLeft(s, space)
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			break
		}
		key := strings.Trim(s[:eq], space)
		s = strings.TrimLeft(s[eq+1:], space)
		quoted := strings.HasPrefix(s, "'")
		if quoted {
			s = s[1:]
		}
		end := 0
		for end < len(s) {
			c := s[end]
			if (quoted && c == '\'') || (!quoted && strings.IndexByte(space, c) >= 0) {
				break
			}
			if c == '\\' {
				end++
			}
			end++
		}
		end = min(end, len(s))
		raw := s[:end]
		out = append(out, keywordValue{key: key, raw: raw, value: unescapeKeyword(raw)})
		s = s[end:]
		if quoted && s != "" {
			s = s[1:]
		}
		s = strings.TrimLeft(s, space)
	}
	return out
}

// unescapeKeyword drops the backslash of each \x.
func unescapeKeyword(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			if i++; i == len(s) {
				break // a trailing backslash ends the value
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
