package migration

import "strings"

// splitStatements splits the text of a sql operation into statements at
// the semicolons that PostgreSQL would treat as separators: not inside a
// literal (an E'…' string continued on the next line keeps its backslash
// escapes), a quoted identifier, a dollar quote, a comment (a -- comment
// ends at a \n or a \r), or the body of a SQL-standard function (BEGIN
// ATOMIC … END in CREATE [OR REPLACE] FUNCTION|PROCEDURE, which contains
// semicolons of its own; the heuristic psql uses). It lexes the way
// singleExpression does. Each statement is its text from its first token to
// its last, without the white space and comments around it (the bytes
// PostgreSQL reads as white space, not Unicode's); statements with no token
// (empty, or only comments) are dropped, as the server drops them. The
// result is used to check a sql operation at validation time; the operation
// itself still runs its text as written.
func splitStatements(s string) []string {
	var out []string
	first, last := -1, -1 // the statement's first and last token
	var words []string    // its first words, lower case (up to 4)
	atomic := false       // inside BEGIN ATOMIC of a CREATE FUNCTION|PROCEDURE
	depth := 0            // BEGIN/CASE … END nesting inside it
	afterBegin := false   // the previous token is the word BEGIN
	token := func(from, to int) {
		if first < 0 {
			first = from
		}
		last = to
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentCont(s[j]) {
				j++
			}
			if j == i+1 && (c == 'e' || c == 'E') && j < len(s) && s[j] == '\'' {
				end := skipEString(s, j)
				token(i, end)
				i, afterBegin = end, false
				continue
			}
			w := strings.ToLower(s[i:j])
			if len(words) < 4 {
				words = append(words, w)
			}
			switch {
			case w == "atomic" && afterBegin && !atomic && routineStatement(words):
				atomic, depth = true, 1
			case atomic && (w == "begin" || w == "case"):
				depth++
			case atomic && w == "end":
				depth--
			}
			token(i, j)
			i, afterBegin = j, w == "begin"
		case c == '\'' || c == '"':
			end, ok := skipQuoted(s, i, false)
			if !ok {
				end = len(s)
			}
			token(i, end)
			i, afterBegin = end, false
		case c == '$':
			end := i + 1
			if tag, ok := dollarTag(s[i:]); ok {
				if n := strings.Index(s[i+len(tag):], tag); n >= 0 {
					end = i + len(tag) + n + len(tag)
				} else {
					end = len(s)
				}
			}
			token(i, end)
			i, afterBegin = end, false
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			i += lineComment(s[i:])
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			i = skipBlockComment(s, i)
		case c == ';' && !(atomic && depth > 0):
			if first >= 0 {
				out = append(out, s[first:last])
			}
			first, last, words = -1, -1, nil
			atomic, depth, afterBegin = false, 0, false
			i++
		case isSpace(c):
			i++
		default:
			token(i, i+1)
			i, afterBegin = i+1, false
		}
	}
	if first >= 0 {
		out = append(out, s[first:last])
	}
	return out
}

// routineStatement reports whether a statement's first words are CREATE [OR
// REPLACE] FUNCTION or PROCEDURE, the statements that may have a BEGIN
// ATOMIC body.
func routineStatement(words []string) bool {
	routine := func(w string) bool { return w == "function" || w == "procedure" }
	switch {
	case len(words) >= 2 && words[0] == "create" && routine(words[1]):
		return true
	case len(words) >= 4 && words[0] == "create" && words[1] == "or" && words[2] == "replace" && routine(words[3]):
		return true
	}
	return false
}

// isSpace reports whether PostgreSQL's lexer reads c as white space.
func isSpace(c byte) bool { return strings.IndexByte(" \t\n\r\f\v", c) >= 0 }

// lineComment returns the length of the -- comment at the start of s: up
// to, not including, the first \n or \r.
func lineComment(s string) int {
	if n := strings.IndexAny(s, "\n\r"); n >= 0 {
		return n
	}
	return len(s)
}

// skipBlockComment returns the index just past the /* comment (they nest)
// that opens at s[i], or len(s) if it is not closed.
func skipBlockComment(s string, i int) int {
	nest := 0
	for j := i; j < len(s); {
		switch {
		case strings.HasPrefix(s[j:], "/*"):
			nest++
			j += 2
		case strings.HasPrefix(s[j:], "*/"):
			nest--
			j += 2
			if nest == 0 {
				return j
			}
		default:
			j++
		}
	}
	return len(s)
}

// skipEString returns the index just past the E'…' string whose quote is
// at s[i], or len(s) if it is not closed. A literal that follows it after
// white space holding a newline continues it, backslash escapes included:
// E'a'<newline>'\';' is one string to the server.
func skipEString(s string, i int) int {
	for {
		end, ok := skipQuoted(s, i, true)
		if !ok {
			return len(s)
		}
		next, ok := quoteContinues(s, end)
		if !ok {
			return end
		}
		i = next
	}
}

// quoteContinues reports whether the literal that ended just before s[i]
// continues: white space (and -- comments) holding a newline, then a
// quote; it returns the index of that quote.
func quoteContinues(s string, i int) (int, bool) {
	newline := false
	for i < len(s) {
		switch c := s[i]; {
		case c == '\n' || c == '\r':
			newline = true
			i++
		case isSpace(c):
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			n := lineComment(s[i:])
			if newline && i+n == len(s) {
				return 0, false // after the newline a comment needs one too
			}
			i += n
		case c == '\'' && newline:
			return i, true
		default:
			return 0, false
		}
	}
	return 0, false
}

// firstKeyword returns the statement's first word in lower case, past
// comments, white space and opening parentheses.
func firstKeyword(stmt string) string {
	s := stmt
	for {
		s = strings.TrimLeft(s, " \t\r\n\f(")
		switch {
		case strings.HasPrefix(s, "--"):
			if n := strings.IndexByte(s, '\n'); n >= 0 {
				s = s[n:]
				continue
			}
			return ""
		case strings.HasPrefix(s, "/*"):
			if n := strings.Index(s, "*/"); n >= 0 {
				s = s[n+2:]
				continue
			}
			return ""
		}
		break
	}
	j := 0
	for j < len(s) && isIdentCont(s[j]) {
		j++
	}
	return strings.ToLower(s[:j])
}

// explainable reports whether a statement is one EXPLAIN can plan without
// running it (so validation checks its names and types without touching rows).
func explainable(stmt string) bool {
	switch firstKeyword(stmt) {
	case "select", "insert", "update", "delete", "with", "values", "merge", "table":
		return true
	}
	return false
}
