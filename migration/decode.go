package migration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// postDecoder is implemented by operations that adjust what YAML decoded,
// with the node at hand.
type postDecoder interface {
	afterDecode(body *yaml.Node)
}

func decode(file string, data []byte) (*Migration, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: file, Op: -1, Msg: "the file is empty"}
		}
		line, msg := yamlErrorLine(err.Error())
		return nil, &Error{File: file, Op: -1, Line: line, Msg: "not valid YAML or JSON: " + msg}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, &Error{File: file, Op: -1, Msg: "the top level must be a mapping with name and operations"}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{File: file, Op: -1, Line: extra.Line, Msg: "a migration file holds exactly one YAML document"}
	}
	root := doc.Content[0]
	m := &Migration{File: file}
	var opsNode *yaml.Node
	seen := map[string]int{}
	for i := 0; i < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, &Error{File: file, Op: -1, Line: k.Line, Msg: "top-level keys must be strings"}
		}
		if line, dup := seen[k.Value]; dup {
			return nil, &Error{File: file, Op: -1, Field: k.Value, Line: k.Line, Msg: fmt.Sprintf("given twice (also on line %d)", line)}
		}
		seen[k.Value] = k.Line
		switch k.Value {
		case "name":
			if v.Kind != yaml.ScalarNode {
				return nil, &Error{File: file, Op: -1, Field: "name", Line: v.Line, Msg: "must be a string"}
			}
			m.Name = v.Value
		case "contract":
			if v.Kind != yaml.ScalarNode {
				return nil, &Error{File: file, Op: -1, Field: "contract", Line: v.Line, Msg: "must be a string"}
			}
			m.Contract = ContractMode(v.Value)
		case "operations":
			opsNode = v
		case "settings":
			if v.Kind != yaml.MappingNode {
				return nil, &Error{File: file, Op: -1, Field: "settings", Line: v.Line, Msg: "must be a mapping of configuration keys to values, e.g. backfill.batch_size: 2000"}
			}
			m.Settings = map[string]string{}
			for j := 0; j+1 < len(v.Content); j += 2 {
				sk, sv := v.Content[j], v.Content[j+1]
				if sv.Kind != yaml.ScalarNode {
					return nil, &Error{File: file, Op: -1, Field: "settings." + sk.Value, Line: sv.Line, Msg: "must be a scalar"}
				}
				m.Settings[sk.Value] = sv.Value
			}
		default:
			return nil, &Error{File: file, Op: -1, Field: k.Value, Line: k.Line, Msg: "unknown top-level field (want name, contract, settings, operations)"}
		}
	}
	if opsNode == nil {
		return nil, &Error{File: file, Op: -1, Field: "operations", Msg: "is required"}
	}
	if opsNode.Kind != yaml.SequenceNode {
		return nil, &Error{File: file, Op: -1, Field: "operations", Line: opsNode.Line, Msg: "must be a list"}
	}
	for i, n := range opsNode.Content {
		op, err := decodeOperation(file, i, n)
		if err != nil {
			return nil, err
		}
		m.Operations = append(m.Operations, op)
	}
	return m, nil
}

func decodeOperation(file string, i int, n *yaml.Node) (Operation, error) {
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		return nil, &Error{File: file, Op: i, Line: n.Line, Msg: "each operation must be a mapping with exactly one key, the operation kind (" + strings.Join(Kinds(), ", ") + ")"}
	}
	kind, body := n.Content[0].Value, n.Content[1]
	op, ok := newOperation(kind)
	if !ok {
		return nil, &Error{File: file, Op: i, Line: n.Content[0].Line, Msg: fmt.Sprintf("unknown operation %q (want one of %s)", kind, strings.Join(Kinds(), ", "))}
	}
	if body.Kind != yaml.MappingNode {
		return nil, &Error{File: file, Op: i, Kind: kind, Line: body.Line, Msg: "the operation body must be a mapping"}
	}
	if field, line, msg := checkKnownFields(body, reflect.TypeOf(op).Elem(), ""); msg != "" {
		return nil, &Error{File: file, Op: i, Kind: kind, Field: field, Line: line, Msg: msg}
	}
	if err := body.Decode(op); err != nil {
		line, msg := yamlErrorLine(cleanYAMLError(err))
		if line == 0 {
			line = body.Line
		}
		return nil, &Error{File: file, Op: i, Kind: kind, Line: line, Msg: msg}
	}
	if pd, ok := op.(postDecoder); ok {
		pd.afterDecode(body)
	}
	return op, nil
}

// checkKnownFields walks a mapping node against the yaml tags of struct type t
// and reports the first key that the struct does not declare.
func checkKnownFields(n *yaml.Node, t reflect.Type, prefix string) (field string, line int, msg string) {
	fields := map[string]reflect.Type{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if name == "" || name == "-" {
			continue
		}
		fields[name] = f.Type
		names = append(names, name)
	}
	seen := map[string]int{}
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		ft, ok := fields[k.Value]
		path := k.Value
		if prefix != "" {
			path = prefix + "." + k.Value
		}
		if !ok {
			return path, k.Line, fmt.Sprintf("unknown field (known fields: %s)", strings.Join(names, ", "))
		}
		if line, dup := seen[k.Value]; dup {
			return path, k.Line, fmt.Sprintf("given twice (also on line %d)", line)
		}
		seen[k.Value] = k.Line
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && v.Kind == yaml.MappingNode {
			if f, l, m := checkKnownFields(v, ft, path); m != "" {
				return f, l, m
			}
			continue
		}
		// A value of the wrong type (a list where a string belongs, a word
		// where a boolean does) is reported with its field and its line.
		if err := v.Decode(reflect.New(ft).Interface()); err != nil {
			l, m := yamlErrorLine(cleanYAMLError(err))
			if l == 0 {
				l = v.Line
			}
			return path, l, m
		}
	}
	return "", 0, ""
}

// yamlLineRe matches the line yaml.v3 puts in front of its messages.
var yamlLineRe = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// yamlErrorLine splits yaml.v3's "yaml: line N: message" (or "line N:
// message") into N and the message, so the line is reported as file:N.
func yamlErrorLine(msg string) (int, string) {
	m := yamlLineRe.FindStringSubmatch(msg)
	if m == nil {
		return 0, strings.TrimPrefix(msg, "yaml: ")
	}
	line, err := strconv.Atoi(m[1])
	if err != nil {
		return 0, msg
	}
	return line, msg[len(m[0]):]
}

func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:\n")
	return strings.TrimSpace(s)
}
