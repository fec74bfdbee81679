// Command testreport reads the event stream of `go test -json` on its standard input and
// prints what `go test` without -v would: each package's ok or FAIL line, and the whole output
// of every test that failed or never ended (a timeout's panic names the tests it stopped).
// Then it prints the slowest top-level tests of the run and the time each package took, which
// is what keeping CI inside its budget needs to know. It exits 1 when any test or package
// failed, and 2 when the stream cannot be read. Used by make test.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// test is what the report keeps of one test while it runs.
type test struct {
	pkg, name string
	output    strings.Builder
	ended     bool
	elapsed   float64
}

func main() {
	slowest := flag.Int("slowest", 15, "print this many of the slowest top-level tests")
	flag.Parse()
	failed, err := report(os.Stdin, os.Stdout, *slowest)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testreport: %v (give it the output of go test -json)\n", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

// report copies the stream's verdicts to w and says whether anything failed.
func report(r io.Reader, w io.Writer, slowest int) (failed bool, err error) {
	tests := map[string]*test{}
	var order []*test
	pkgTime := map[string]float64{}
	raced := map[string][]string{} // by package: outputs of passed tests that hold a race report
	var pkgs []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if json.Unmarshal(line, &e) != nil || e.Action == "" {
			// go test prints build errors as plain text beside the stream.
			fmt.Fprintln(w, string(line))
			continue
		}
		if e.Test == "" {
			switch e.Action {
			case "build-output":
				fmt.Fprint(w, e.Output)
			case "build-fail":
				failed = true
			case "output":
				if out := strings.TrimSpace(e.Output); out != "PASS" && out != "FAIL" && !strings.HasPrefix(out, "=== ") {
					fmt.Fprint(w, e.Output)
				}
			case "pass", "fail", "skip":
				if _, seen := pkgTime[e.Package]; !seen {
					pkgs = append(pkgs, e.Package)
				}
				pkgTime[e.Package] = e.Elapsed
				if e.Action == "fail" {
					failed = true
					for _, out := range raced[e.Package] {
						fmt.Fprint(w, out)
					}
				}
				delete(raced, e.Package)
			}
			continue
		}
		key := e.Package + "\x00" + e.Test
		t := tests[key]
		if t == nil {
			t = &test{pkg: e.Package, name: e.Test}
			tests[key] = t
			order = append(order, t)
		}
		switch e.Action {
		case "output":
			t.output.WriteString(e.Output)
		case "pass", "skip":
			t.ended, t.elapsed = true, e.Elapsed
			// The race detector writes its report past the testing package, so go test -json
			// may give it to whichever test wrote last; the test it fails is another. Such
			// output is kept, and printed if its package fails.
			if out := t.output.String(); strings.Contains(out, "WARNING: DATA RACE") {
				raced[e.Package] = append(raced[e.Package], fmt.Sprintf("--- %s passed, but its output holds a race report:\n%s", e.Test, out))
			}
			t.output.Reset()
		case "fail":
			t.ended, t.elapsed = true, e.Elapsed
			failed = true
			// go test -json gives a subtest's lines to the subtest, so each level prints its own.
			fmt.Fprint(w, t.output.String())
			t.output.Reset()
		}
	}
	if err := sc.Err(); err != nil {
		return true, err
	}
	for _, t := range order {
		if !t.ended && !strings.Contains(t.name, "/") {
			failed = true
			fmt.Fprintf(w, "--- %s in %s never ended; its output:\n%s", t.name, t.pkg, t.output.String())
		}
	}
	top := slices.DeleteFunc(slices.Clone(order), func(t *test) bool { return !t.ended || strings.Contains(t.name, "/") })
	slices.SortStableFunc(top, func(a, b *test) int { return cmp.Compare(b.elapsed, a.elapsed) })
	if len(top) > slowest {
		top = top[:slowest]
	}
	if len(top) > 0 {
		fmt.Fprintf(w, "== the %d slowest tests\n", len(top))
		for _, t := range top {
			fmt.Fprintf(w, "%8s  %s %s\n", seconds(t.elapsed), short(t.pkg), t.name)
		}
	}
	if len(pkgs) > 0 {
		slices.SortStableFunc(pkgs, func(a, b string) int { return cmp.Compare(pkgTime[b], pkgTime[a]) })
		fmt.Fprintln(w, "== the packages by time")
		for _, p := range pkgs {
			if pkgTime[p] >= 1 {
				fmt.Fprintf(w, "%8s  %s\n", seconds(pkgTime[p]), short(p))
			}
		}
	}
	return failed, nil
}

func seconds(s float64) string {
	return fmt.Sprintf("%.1fs", s)
}

// short drops the module's path from a package's.
func short(pkg string) string {
	if i := strings.Index(pkg, "/cairn/"); i >= 0 {
		return "./" + pkg[i+len("/cairn/"):]
	}
	if strings.HasSuffix(pkg, "/cairn") {
		return "."
	}
	return pkg
}
