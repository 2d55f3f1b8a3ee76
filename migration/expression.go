package migration

import "strings"

// singleExpression rejects text that is clearly not one SQL expression: a
// statement separator, a comment or an unbalanced parenthesis outside
// literals, an unterminated literal, or an identifier longer than 63 bytes
// (PostgreSQL would truncate it, so it could name another object whose
// name is its first 63 bytes). The database-side check (a prepared
// statement embedding the expression) catches the rest; this pass gives the
// clearer message for the common mistakes.
//
// The text is split into tokens the way PostgreSQL's lexer does (with
// standard_conforming_strings on, the default since 9.1) wherever the split
// decides what is inside a literal: identifiers may contain '$' (x$y$ is one
// name, not a dollar quote), E'…' strings take backslash escapes, dollar-quote
// tags may contain digits ($a1$…$a1$). A scanner that disagreed with the
// server there could be led to treat a ';' as quoted while the server runs it
// as a statement separator. Where the server's own reading depends on its
// version (a number directly followed by a quote or '$'), the text is rejected.
func singleExpression(field, s string) error {
	depth := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentCont(s[j]) {
				j++
			}
			if j == i+1 && (c == 'e' || c == 'E') && j < len(s) && s[j] == '\'' {
				end, ok := skipQuoted(s, j, true)
				if !ok {
					return fieldErr(field, "unterminated quote in %q", s)
				}
				// E'a'<newline>'b' is one E-string to the server, backslash
				// escapes included; the exact whitespace that makes a
				// continuation differs across versions, so refuse it.
				k := end
				for k < len(s) && strings.IndexByte(" \t\n\r\f\v", s[k]) >= 0 {
					k++
				}
				if k > end && k < len(s) && s[k] == '\'' {
					return fieldErr(field, "an E'…' string continued by another literal is ambiguous in %q: write one literal", s)
				}
				i = end
				continue
			}
			if j-i > maxIdentLen {
				return fieldErr(field, "identifier %q is longer than %d bytes: PostgreSQL would truncate it", s[i:j], maxIdentLen)
			}
			i = j
		case c >= '0' && c <= '9':
			j := i + 1
			for j < len(s) && (s[j] == '.' || s[j] != '$' && isIdentCont(s[j])) {
				j++
			}
			if j < len(s) && (s[j] == '\'' || s[j] == '$') {
				return fieldErr(field, "a number directly followed by %q is ambiguous in %q: add a space", s[j], s)
			}
			// PostgreSQL 14 reads letters after a number as a name of
			// their own (0A.B is 0, A, ., B): one longer than 63 bytes
			// would be truncated.
			for _, part := range strings.Split(s[i:j], ".") {
				if len(part) > maxIdentLen && strings.IndexFunc(part, func(r rune) bool { return r > '9' && r != '_' }) >= 0 {
					return fieldErr(field, "identifier %q is longer than %d bytes: PostgreSQL would truncate it", part, maxIdentLen)
				}
			}
			i = j
		case c == '\'' || c == '"':
			end, ok := skipQuoted(s, i, false)
			if !ok {
				return fieldErr(field, "unterminated quote in %q", s)
			}
			// A quoted identifier (not a U&"…" one, whose escapes make it
			// shorter) is truncated like any other.
			if name := strings.ReplaceAll(s[i+1:end-1], `""`, `"`); c == '"' && len(name) > maxIdentLen && !unicodeEscaped(s, i) {
				return fieldErr(field, "identifier %q is longer than %d bytes: PostgreSQL would truncate it", name, maxIdentLen)
			}
			i = end
		case c == '$':
			if i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' { // parameter $n
				i += 2
				for i < len(s) && s[i] >= '0' && s[i] <= '9' {
					i++
				}
				continue
			}
			if tag, ok := dollarTag(s[i:]); ok {
				end := strings.Index(s[i+len(tag):], tag)
				if end < 0 {
					return fieldErr(field, "unterminated dollar quote in %q", s)
				}
				i += len(tag) + end + len(tag)
				continue
			}
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-',
			c == '/' && i+1 < len(s) && s[i+1] == '*':
			return fieldErr(field, "comments are not allowed in an expression: %q", s)
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return fieldErr(field, "unbalanced parentheses in %q", s)
			}
			i++
		case c == ';':
			return fieldErr(field, "must be one SQL expression, found ';' in %q", s)
		case c == 0:
			return fieldErr(field, "contains a NUL byte")
		default:
			i++
		}
	}
	if depth != 0 {
		return fieldErr(field, "unbalanced parentheses in %q", s)
	}
	return nil
}

// unicodeEscaped reports whether the quote at s[i] opens a U&'…' or U&"…".
func unicodeEscaped(s string, i int) bool {
	return i >= 2 && s[i-1] == '&' && (s[i-2] == 'u' || s[i-2] == 'U') && (i == 2 || !isIdentCont(s[i-3]))
}

// skipQuoted returns the index just past the literal or quoted identifier
// that opens at s[i] (a ' or a "). A doubled quote is part of the text; in an
// E'…' string (backslash) a backslash escapes the next byte.
func skipQuoted(s string, i int, backslash bool) (int, bool) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if backslash {
				j++
			}
		case q:
			if j+1 < len(s) && s[j+1] == q {
				j++
				continue
			}
			return j + 1, true
		}
	}
	return 0, false
}

// dollarTag returns the opening tag ($$ or $name$) at the start of s.
func dollarTag(s string) (string, bool) {
	if len(s) < 2 || s[0] != '$' {
		return "", false
	}
	if s[1] == '$' {
		return "$$", true
	}
	if !isIdentStart(s[1]) {
		return "", false
	}
	for j := 2; j < len(s); j++ {
		switch {
		case s[j] == '$':
			return s[:j+1], true
		case isIdentStart(s[j]) || s[j] >= '0' && s[j] <= '9':
		default:
			return "", false
		}
	}
	return "", false
}

// isIdentStart and isIdentCont are PostgreSQL's ident_start and ident_cont
// (bytes ≥ 0x80 are letters to the lexer).
func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentCont(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}
