package migration

import "strings"

// splitStatements splits the text of a sql operation into statements at
// the semicolons that PostgreSQL would treat as separators: not inside a
// literal, a quoted identifier, a dollar quote, a comment, or the body of a
// SQL-standard function (BEGIN ATOMIC … END, which contains semicolons of
// its own). It lexes the way singleExpression does. Empty statements are
// dropped. The result is used to check a sql operation at validation time;
// the operation itself still runs its text as written.
func splitStatements(s string) []string {
	var out []string
	start := 0
	atomic := false // inside a statement that has BEGIN ATOMIC
	depth := 0      // BEGIN/CASE … END nesting inside such a statement
	prevWord := ""
	flush := func(end int) {
		if st := strings.TrimSpace(s[start:end]); st != "" {
			out = append(out, st)
		}
		start = end + 1
		atomic, depth, prevWord = false, 0, ""
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
				end, ok := skipQuoted(s, j, true)
				if !ok {
					i = len(s)
					continue
				}
				i = end
				continue
			}
			w := strings.ToLower(s[i:j])
			switch {
			case w == "atomic" && prevWord == "begin":
				atomic, depth = true, 1
			case atomic && (w == "begin" || w == "case"):
				depth++
			case atomic && w == "end":
				depth--
			}
			prevWord = w
			i = j
		case c == '\'' || c == '"':
			end, ok := skipQuoted(s, i, false)
			if !ok {
				i = len(s)
				continue
			}
			i = end
		case c == '$':
			if tag, ok := dollarTag(s[i:]); ok {
				end := strings.Index(s[i+len(tag):], tag)
				if end < 0 {
					i = len(s)
					continue
				}
				i += len(tag) + end + len(tag)
				continue
			}
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			end := strings.IndexByte(s[i:], '\n')
			if end < 0 {
				i = len(s)
				continue
			}
			i += end
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			// Block comments nest in PostgreSQL.
			nest := 0
			j := i
			for j < len(s) {
				if strings.HasPrefix(s[j:], "/*") {
					nest++
					j += 2
					continue
				}
				if strings.HasPrefix(s[j:], "*/") {
					nest--
					j += 2
					if nest == 0 {
						break
					}
					continue
				}
				j++
			}
			i = j
		case c == ';':
			if atomic && depth > 0 {
				i++
				continue
			}
			flush(i)
			i++
		default:
			i++
		}
	}
	if start < len(s) {
		flush(len(s))
	}
	return out
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
