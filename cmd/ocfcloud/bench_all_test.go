package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBenchAllFindsEveryRegisteredBenchmark: a new `bench` subcommand is
// part of `make bench` without a change to the generator.
func TestBenchAllFindsEveryRegisteredBenchmark(t *testing.T) {
	steps, err := benchSteps(benchCmd(), allOptions{SoakDuration: 2 * time.Minute, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range steps {
		names = append(names, s.Name)
	}
	for _, sub := range benchCommands {
		name := sub().Name()
		if name != "all" && !slices.Contains(names, name) {
			t.Errorf("bench %s is not run by bench all (steps %v)", name, names)
		}
	}
	if slices.Contains(names, "all") {
		t.Error("bench all runs itself")
	}
	if names[0] != "startup" || names[len(names)-1] != "soak" {
		t.Errorf("order %v: want startup first and soak last", names)
	}
	soak := steps[len(steps)-1]
	if !strings.Contains(soak.Display, "bench soak --duration 2m0s") || soak.Timeout != 3*time.Minute {
		t.Errorf("soak step %q, timeout %s", soak.Display, soak.Timeout)
	}

	quick, err := benchSteps(benchCmd(), allOptions{Quick: true, Only: []string{"c2c"}, Set: []string{"c2c=--workers 2"}, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(quick) != 1 || !strings.HasSuffix(quick[0].Display, "--live-rate 100 --workers 2") {
		t.Fatalf("--quick --only c2c --set: %+v", quick)
	}
	if _, err := benchSteps(benchCmd(), allOptions{Only: []string{"nonsense"}}); err == nil {
		t.Error("--only with an unknown benchmark accepted")
	}
}

// TestBenchAllWritesTheDocumentAndFailsAfterwards runs fake benchmarks (shell
// one-liners): one prints a table, one fails, one prints `go test -bench`
// output. The document has the machine, the template's text, the commands,
// the tables and the failure; the run fails only after writing it.
func TestBenchAllWritesTheDocumentAndFailsAfterwards(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("needs /bin/sh for the fake benchmarks")
	}
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "tmpl.md")
	if err := os.WriteFile(tmpl, []byte(`{{/* a comment */}}
{{define "intro"}}Intro text.{{end}}
{{define "fast"}}
## Fast thing (issue 1)

Measures the fast thing. Target: ≥ 1,000/s.
{{end}}
{{define "fast.after"}}Why it is fast.{{end}}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	sh := func(name, script string) benchStep {
		return benchStep{Name: name, Short: "The " + name + " benchmark.", Argv: []string{"/bin/sh", "-c", script}, Display: "fake " + name, Timeout: 10 * time.Second}
	}
	steps := []benchStep{
		sh("fast", `echo progress >&2; printf '| run | per second |\n|---|---:|\n| fast | 1,234 |\n'`),
		sh("broken", `echo 'starting' >&2; echo 'ocfcloud: gateway: address in use' >&2; exit 1`),
		sh("slow", `exec sleep 5`),
		{Name: goTestStep, GoTest: true, Argv: []string{"/bin/sh", "-c", `printf 'goos: linux\npkg: example.com/x\nBenchmarkGrant-2   \t 1000\t 12345 ns/op\t 812.5 grants/s\t 2048 B/op\t 31 allocs/op\nPASS\nok  \texample.com/x\t1.2s\n'`}, Display: "go test -bench", Timeout: 10 * time.Second},
	}
	steps[2].Timeout = 200 * time.Millisecond
	out := filepath.Join(dir, "BENCHMARKS.md")
	err := runAll(context.Background(), allOptions{Out: out, Template: tmpl}, steps, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "2 of 4") || !strings.Contains(err.Error(), "broken, slow") {
		t.Fatalf("runAll = %v, want a failure naming broken and slow", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("no document after a failed run: %v", err)
	}
	doc := string(b)
	for _, want := range []string{
		"# Benchmarks\n", "Intro text.", "## Machine", "| CPU |", "cores", "| Go | go", "| commit |",
		"| [fast](#fast-thing-issue-1) |", "| [broken](#broken) |", "**FAILED**",
		"## Fast thing (issue 1)\n\nMeasures the fast thing. Target: ≥ 1,000/s.",
		"Command: `fake fast` · wall time", "| fast | 1,234 |", "Why it is fast.",
		"## broken\n\nThe broken benchmark.", "**Failed:** exit status 1", "ocfcloud: gateway: address in use",
		"**Failed:** timed out after 200ms",
		"| package | benchmark | iterations | ns/op | grants/s | B/op | allocs/op |",
		"| example.com/x | BenchmarkGrant | 1000 | 12345 | 812.5 | 2048 | 31 |",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("document lacks %q:\n%s", want, doc)
		}
	}
	if strings.Index(doc, "| fast | 1,234 |") > strings.Index(doc, "Why it is fast.") {
		t.Error("the .after block comes before the results")
	}
}

func TestGoBenchPackagesAreThoseWithBenchmarks(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"a/a_test.go":        "package a\n\nfunc BenchmarkA(b *testing.B) {}\n",
		"b/b_test.go":        "package b\n\nfunc TestB(t *testing.T) {}\n",
		"c/d/d_test.go":      "package d\n\nfunc BenchmarkD(b *testing.B) {}\n",
		"testdata/x_test.go": "package x\n\nfunc BenchmarkX(b *testing.B) {}\n",
	}
	for name, text := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wd, _ := os.Getwd()
	if err := os.Chdir(root); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	got, err := goBenchPackages(".")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"./a", "./c/d"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestFinalTextKeepsWhatATerminalShows(t *testing.T) {
	in := "title\n  connecting: 1/3\r  connecting: 2/3\r" + strings.Repeat(" ", 20) + "\rresult line\nprogress 1\rprogress 2\r   \r\nlast"
	want := "title\nresult line\nlast"
	if got := finalText(in); got != want {
		t.Fatalf("finalText:\n%q\nwant\n%q", got, want)
	}
}
