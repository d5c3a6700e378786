package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"
	"unicode"

	"github.com/spf13/cobra"
)

// `ocfcloud bench all` regenerates docs/BENCHMARKS.md in one run: every
// registered `bench` subcommand (found in benchCommands, so a new benchmark
// is included without a change here), then the Go benchmarks beside the
// code. Each runs as its own child process of this binary, one after the
// other, so each has the machine to itself.
//
// The hand-written prose (what each benchmark measures, its targets, the
// commentary on results) lives in the template docs/benchmarks.tmpl.md, one
// named block per benchmark, not in Go strings: it is Markdown that is
// edited like the rest of docs/, next to the file it becomes, and a
// benchmark without a block still gets a section from its one-line help.
// The structure of the document (machine, summary, per-benchmark command,
// wall time and raw output) is written here.

func init() { benchCommands = append(benchCommands, benchAllCmd, benchStartupCmd) }

// quickArgs are tiny sizes for --quick, a smoke test of the generator and
// of every benchmark's plumbing in a few minutes; the figures mean nothing.
var quickArgs = map[string][]string{
	"startup":         {"--runs", "1"},
	"c2c":             {"--duration", "1s", "--workers", "4", "--devices", "2", "--live-rate", "100"},
	"registry":        {"--devices", "10", "--events", "2000", "--rate", "200", "--startup-devices", "200"},
	"token":           {"--duration", "1s", "--workers", "4"},
	"webhooks":        {"--duration", "1s", "--rate", "100", "--devices", "2", "--burst", "500"},
	"gateway":         {"--onboardings", "100", "--idle-devices", "100", "--handshakes", "100", "--reconnects", "100", "--concurrency", "8"},
	"coap-flood":      {"--connections", "200", "--devices", "2", "--before", "1s", "--sign-in-timeout", "2s", "--inactivity-timeout", "2s", "--hold", "3s", "--ping-every", "1s"},
	"reconnect-storm": {"--devices", "200", "--gateways", "2", "--device-processes", "2", "--parallel", "16"},
	"soak":            {"--devices", "10", "--change-every", "1s", "--samples", "2", "--max-growth", "100"},
	goTestStep:        {"-benchtime", "100ms"},
}

// runFirst and runLast order the steps; the others run in between, by
// name. The soak is long and is about stability, not speed.
var runFirst, runLast = []string{"startup"}, []string{goTestStep, "soak"}

func stepRank(name string) int {
	if i := slices.Index(runFirst, name); i >= 0 {
		return i - len(runFirst)
	}
	return slices.Index(runLast, name) + 1 // 0 for the others
}

const goTestStep = "go-test"

// benchStep is one child process of the run.
type benchStep struct {
	Name    string // the template block and the section
	Short   string // the section's text when the template has no block
	Argv    []string
	Display string // the command as the document shows it
	Timeout time.Duration
	GoTest  bool // output is `go test -bench` text, turned into a table
}

type stepResult struct {
	benchStep
	Started time.Time
	Wall    time.Duration
	Stdout  string
	Stderr  string // the last lines, for a failure
	Err     error
	Skipped string
}

type allOptions struct {
	Out          string
	Template     string
	SoakDuration time.Duration
	Timeout      time.Duration
	Quick        bool
	Only, Skip   []string
	Set          []string
	Go           string
}

func benchAllCmd() *cobra.Command {
	var o allOptions
	cmd := &cobra.Command{
		Use:   "all",
		Short: "Run every benchmark, one process after the other, and write docs/BENCHMARKS.md",
		Long: `Run every benchmark, one process after the other, and write docs/BENCHMARKS.md.

Every 'ocfcloud bench' subcommand runs as a child process of this binary with
its default sizes (the soak for --soak-duration), then 'go test -bench' over the
packages that have Benchmark functions. The document gets the machine, each
benchmark's text from --template, its command, wall time and Markdown output. A
failing benchmark is reported in the document, and the command exits non-zero
after writing it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			steps, err := benchSteps(cmd.Parent(), o)
			if err != nil {
				return err
			}
			return runAll(cmd.Context(), o, steps, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Out, "out", "docs/BENCHMARKS.md", `where to write the document ("-" for stdout)`)
	f.StringVar(&o.Template, "template", "docs/benchmarks.tmpl.md", "the per-benchmark text")
	f.DurationVar(&o.SoakDuration, "soak-duration", 2*time.Minute, "how long the soak runs")
	f.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "time limit of one benchmark (the soak gets --soak-duration on top)")
	f.BoolVar(&o.Quick, "quick", false, "tiny sizes: checks that every benchmark and the generator work; the figures mean nothing")
	f.StringSliceVar(&o.Only, "only", nil, "run only these benchmarks (names as in 'ocfcloud bench --help', and go-test)")
	f.StringSliceVar(&o.Skip, "skip", nil, "leave out these benchmarks")
	f.StringArrayVar(&o.Set, "set", nil, `extra flags for one benchmark, e.g. --set "gateway=--idle-devices 10000" (repeatable)`)
	f.StringVar(&o.Go, "go", "go", `go command for the Go benchmarks ("" leaves them out)`)
	return cmd
}

// benchSteps lists the children of the run: the sibling subcommands of
// `all` under `bench`, then the Go benchmarks.
func benchSteps(bench *cobra.Command, o allOptions) ([]benchStep, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	display := exe
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, exe); err == nil && !strings.HasPrefix(rel, "..") {
			display = rel
		}
	}
	extra := map[string][]string{}
	for _, s := range o.Set {
		name, args, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("--set %q: want name=flags", s)
		}
		extra[name] = append(extra[name], strings.Fields(args)...)
	}
	var steps []benchStep
	known := map[string]bool{goTestStep: true}
	for _, sub := range bench.Commands() {
		name := sub.Name()
		if name == "all" || name == "help" || sub.Hidden {
			continue
		}
		known[name] = true
		var args []string
		timeout := o.Timeout
		if name == "soak" {
			args = append(args, "--duration", o.SoakDuration.String())
			timeout += o.SoakDuration
		}
		if o.Quick {
			args = append(args, quickArgs[name]...)
		}
		args = append(args, extra[name]...)
		argv := append([]string{exe, "bench", name}, args...)
		steps = append(steps, benchStep{
			Name: name, Short: sub.Short, Argv: argv, Timeout: timeout,
			Display: strings.Join(append([]string{display, "bench", name}, args...), " "),
		})
	}
	if o.Go != "" {
		pkgs, err := goBenchPackages(".")
		if err != nil {
			return nil, err
		}
		if len(pkgs) > 0 {
			args := []string{"test", "-run", "^$", "-bench", ".", "-benchmem"}
			if o.Quick {
				args = append(args, quickArgs[goTestStep]...)
			}
			args = append(append(args, extra[goTestStep]...), pkgs...)
			steps = append(steps, benchStep{
				Name: goTestStep, Short: "The Benchmark functions beside the code.", GoTest: true,
				Argv: append([]string{o.Go}, args...), Timeout: o.Timeout,
				Display: strings.Join(append([]string{"go"}, quoteArgs(args)...), " "),
			})
		}
	}
	for _, n := range append(append([]string{}, o.Only...), o.Skip...) {
		if !known[n] {
			return nil, fmt.Errorf("no benchmark %q", n)
		}
	}
	for n := range extra {
		if !known[n] {
			return nil, fmt.Errorf("--set: no benchmark %q", n)
		}
	}
	steps = slices.DeleteFunc(steps, func(s benchStep) bool {
		return (len(o.Only) > 0 && !slices.Contains(o.Only, s.Name)) || slices.Contains(o.Skip, s.Name)
	})
	sort.SliceStable(steps, func(i, j int) bool { return stepRank(steps[i].Name) < stepRank(steps[j].Name) })
	return steps, nil
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, "^$*? ") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out
}

// goBenchPackages are the packages under root with a Benchmark function, so
// `go test -bench` does not build and run every test binary of the module.
func goBenchPackages(root string) ([]string, error) {
	var pkgs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); p != root && (strings.HasPrefix(n, ".") || strings.HasPrefix(n, "_") || n == "testdata" || n == "vendor" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("\nfunc Benchmark")) {
			pkg := "./" + filepath.ToSlash(filepath.Dir(p))
			if filepath.Dir(p) == "." {
				pkg = "."
			}
			if !slices.Contains(pkgs, pkg) {
				pkgs = append(pkgs, pkg)
			}
		}
		return nil
	})
	sort.Strings(pkgs)
	return pkgs, err
}

// runAll runs steps one after the other, writes the document and fails if
// any step failed.
func runAll(ctx context.Context, o allOptions, steps []benchStep, progress io.Writer) error {
	tmpl, err := loadBenchTemplate(o.Template)
	if err != nil {
		return err
	}
	m := machine()
	var results []stepResult
	for i, s := range steps {
		if ctx.Err() != nil {
			results = append(results, stepResult{benchStep: s, Skipped: "not run: interrupted"})
			continue
		}
		fmt.Fprintf(progress, "== [%d/%d] %s\n", i+1, len(steps), s.Display)
		r := runStep(ctx, s, progress)
		if r.Err != nil {
			fmt.Fprintf(progress, "== %s FAILED after %s: %v\n", s.Name, r.Wall.Round(time.Second), r.Err)
		} else {
			fmt.Fprintf(progress, "== %s done in %s\n", s.Name, r.Wall.Round(time.Second))
		}
		results = append(results, r)
	}
	m.End = time.Now()
	var doc bytes.Buffer
	if err := writeBenchDoc(&doc, tmpl, m, o.Quick, results); err != nil {
		return err
	}
	if err := writeFileAtomic(o.Out, doc.Bytes()); err != nil {
		return err
	}
	var failed []string
	for _, r := range results {
		if r.Err != nil || r.Skipped != "" {
			failed = append(failed, r.Name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d benchmarks failed or did not run (%s); the report is in %s", len(failed), len(results), strings.Join(failed, ", "), o.Out)
	}
	fmt.Fprintf(progress, "== all %d benchmarks done in %s; wrote %s\n", len(results), m.End.Sub(m.Start).Round(time.Second), o.Out)
	return nil
}

func writeFileAtomic(path string, data []byte) error {
	if path == "-" {
		_, err := os.Stdout.Write(data)
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bench-*.md")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// runStep runs one child: its stdout is the result, its stderr (progress
// and logs) goes to progress as it comes, and its last lines are kept for
// the report of a failure. A timeout or an interrupt sends SIGINT first, so
// the benchmark can stop its servers, and kills it 30 s later.
func runStep(ctx context.Context, s benchStep, progress io.Writer) stepResult {
	r := stepResult{benchStep: s, Started: time.Now()}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Argv[0], s.Argv[1:]...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	var stdout bytes.Buffer
	tail := &tailWriter{max: 30}
	cmd.Stdout = &stdout
	cmd.Stderr = io.MultiWriter(progress, tail)
	err := cmd.Run()
	r.Wall = time.Since(r.Started)
	r.Stdout = stdout.String()
	r.Stderr = tail.String()
	if tail.partial != "" {
		// A progress line redrawn with \r: end it before our own line.
		fmt.Fprintln(progress)
	}
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %s (%w)", s.Timeout, err)
		}
		r.Err = err
	}
	return r
}

// tailWriter keeps the last max lines written to it.
type tailWriter struct {
	mu      sync.Mutex
	max     int
	lines   []string
	partial string
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.partial + string(p)
	parts := strings.Split(s, "\n")
	t.partial = parts[len(parts)-1]
	for _, l := range parts[:len(parts)-1] {
		// Progress bars redraw a line with \r: keep what is left last.
		if i := strings.LastIndex(strings.TrimRight(l, "\r"), "\r"); i >= 0 {
			l = l[i+1:]
		}
		t.lines = append(t.lines, strings.TrimRight(l, "\r "))
	}
	if over := len(t.lines) - t.max; over > 0 {
		t.lines = t.lines[over:]
	}
	return len(p), nil
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if p := strings.TrimSpace(t.partial); p != "" {
		lines = append(slices.Clone(lines), p)
	}
	return strings.Join(lines, "\n")
}

type machineInfo struct {
	CPU, Memory, OS, Go, Commit string
	Cores                       int
	Start, End                  time.Time
}

func machine() machineInfo {
	m := machineInfo{
		CPU: "unknown", Memory: "unknown", Cores: runtime.NumCPU(), Go: runtime.Version(),
		OS: runtime.GOOS + "/" + runtime.GOARCH, Commit: gitCommit(), Start: time.Now(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb uint64
		for _, l := range strings.Split(string(b), "\n") {
			if _, err := fmt.Sscanf(l, "MemTotal: %d kB", &kb); err == nil {
				m.Memory = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.OS += ", Linux " + strings.TrimSpace(string(b))
	}
	return m
}

// gitCommit is the commit the binary was built from (Go stamps it into
// builds inside a git checkout), with "+ local changes" when the tree was
// dirty, else what git says about the working directory.
func gitCommit() string {
	var rev, modified string
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
	}
	if rev == "" {
		out, err := exec.Command("git", "rev-parse", "HEAD").Output()
		if err != nil {
			return "unknown"
		}
		rev = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
			modified = "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += " + local changes"
	}
	return rev
}

func loadBenchTemplate(path string) (*template.Template, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("benchmark text: %w (run from the repository root or pass --template)", err)
	}
	t, err := template.New(filepath.Base(path)).Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("benchmark text: %w", err)
	}
	return t, nil
}

// block is the template block name, trimmed, or "" when there is none.
func block(t *template.Template, name string) (string, error) {
	if t.Lookup(name) == nil {
		return "", nil
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, name, nil); err != nil {
		return "", err
	}
	return strings.TrimSpace(b.String()), nil
}

func writeBenchDoc(w io.Writer, t *template.Template, m machineInfo, quick bool, results []stepResult) error {
	var b bytes.Buffer
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("<!-- Generated by `make bench` (bin/ocfcloud bench all) from docs/benchmarks.tmpl.md: edit that file, not this one. -->\n\n")
	if quick {
		b.WriteString("> **Quick run** (`--quick`): every benchmark ran with tiny sizes to check the plumbing. The figures mean nothing.\n\n")
	}
	intro, err := block(t, "intro")
	if err != nil {
		return err
	}
	if intro != "" {
		b.WriteString(intro + "\n\n")
	}
	b.WriteString("## Machine\n\n| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPU | %s, %d cores |\n| memory | %s |\n| OS | %s |\n| Go | %s |\n| commit | %s |\n", m.CPU, m.Cores, m.Memory, m.OS, m.Go, m.Commit)
	fmt.Fprintf(&b, "| run | %s – %s UTC (%s) |\n\n", m.Start.UTC().Format("2006-01-02 15:04"), m.End.UTC().Format("15:04"), m.End.Sub(m.Start).Round(time.Second))
	texts := make([]string, len(results))
	for i, r := range results {
		if texts[i], err = block(t, r.Name); err != nil {
			return err
		}
		if !strings.HasPrefix(texts[i], "## ") {
			texts[i] = strings.TrimSpace("## " + r.Name + "\n\n" + r.Short + "\n\n" + texts[i])
		}
	}
	b.WriteString("| benchmark | wall time | result |\n|---|---:|---|\n")
	for i, r := range results {
		fmt.Fprintf(&b, "| [%s](#%s) | %s | %s |\n", r.Name, anchor(texts[i]), wall(r), status(r))
	}
	b.WriteString("\n")
	for i, r := range results {
		b.WriteString(texts[i] + "\n\n")
		fmt.Fprintf(&b, "Command: `%s` · wall time %s · %s\n\n", r.Display, wall(r), status(r))
		out := strings.TrimSpace(finalText(r.Stdout))
		if r.GoTest {
			out = goBenchTable(out)
		}
		if out != "" {
			b.WriteString(out + "\n\n")
		}
		if r.Err != nil {
			fmt.Fprintf(&b, "**Failed:** %s. Last lines of its log:\n\n```text\n%s\n```\n\n", r.Err, strings.ReplaceAll(r.Stderr, "```", "'''"))
		}
		after, err := block(t, r.Name+".after")
		if err != nil {
			return err
		}
		if after != "" {
			b.WriteString(after + "\n\n")
		}
	}
	_, err = w.Write(bytes.TrimRight(b.Bytes(), "\n"))
	if err == nil {
		_, err = io.WriteString(w, "\n")
	}
	return err
}

// anchor is the GitHub anchor of the heading on text's first line:
// lower case, spaces to hyphens, punctuation dropped.
func anchor(text string) string {
	heading, _, _ := strings.Cut(strings.TrimPrefix(text, "## "), "\n")
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func wall(r stepResult) string {
	if r.Skipped != "" {
		return "–"
	}
	d := r.Wall.Round(time.Second)
	if d < time.Minute {
		return r.Wall.Round(100 * time.Millisecond).String()
	}
	return d.String()
}

func status(r stepResult) string {
	switch {
	case r.Skipped != "":
		return "**" + r.Skipped + "**"
	case r.Err != nil:
		return "**FAILED**"
	}
	return "ok"
}

// goBenchTable turns `go test -bench` output into a table: one row per
// benchmark with its package, iterations and every reported metric. Lines
// it does not understand (a failing test's output) are kept in a block.
func goBenchTable(out string) string {
	type row struct {
		pkg, name, n string
		metrics      map[string]string
	}
	var rows []row
	var units, other []string
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(l, "pkg: "):
			pkg = strings.TrimPrefix(l, "pkg: ")
		case strings.HasPrefix(l, "Benchmark"):
			f := strings.Fields(l)
			if len(f) < 4 || len(f)%2 != 0 {
				other = append(other, l)
				continue
			}
			r := row{pkg: pkg, name: f[0], n: f[1], metrics: map[string]string{}}
			if i := strings.LastIndex(r.name, "-"); i > 0 {
				r.name = r.name[:i] // the GOMAXPROCS suffix; the machine table has the cores
			}
			for i := 2; i+1 < len(f); i += 2 {
				r.metrics[f[i+1]] = f[i]
				if !slices.Contains(units, f[i+1]) {
					units = append(units, f[i+1])
				}
			}
			rows = append(rows, r)
		case l == "" || l == "PASS" || strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "goos: ") ||
			strings.HasPrefix(l, "goarch: ") || strings.HasPrefix(l, "cpu: ") || strings.HasPrefix(l, "?"):
		default:
			other = append(other, l)
		}
	}
	var b strings.Builder
	if len(rows) > 0 {
		b.WriteString("| package | benchmark | iterations |")
		for _, u := range units {
			fmt.Fprintf(&b, " %s |", u)
		}
		b.WriteString("\n|---|---|---:|" + strings.Repeat("---:|", len(units)) + "\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "| %s | %s | %s |", r.pkg, r.name, r.n)
			for _, u := range units {
				fmt.Fprintf(&b, " %s |", r.metrics[u])
			}
			b.WriteString("\n")
		}
	}
	if len(other) > 0 {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		b.WriteString("```text\n" + strings.Join(other, "\n") + "\n```")
	}
	return strings.TrimSpace(b.String())
}

// benchStartupCmd measures how long `ocfcloud serve` takes from exec to
// /readyz 200 on a new data dir and on a restart, the figures of issue 3.
func benchStartupCmd() *cobra.Command {
	var runs int
	cmd := &cobra.Command{
		Use:   "startup",
		Short: "Time from starting `ocfcloud serve` to /readyz 200: first start on a new data dir, and a restart",
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			var first, again []time.Duration
			for i := 0; i < runs; i++ {
				dir, err := os.MkdirTemp("", "ocfcloud-startup-")
				if err != nil {
					return err
				}
				d1, err := timeServe(cmd.Context(), exe, dir)
				if err == nil {
					var d2 time.Duration
					if d2, err = timeServe(cmd.Context(), exe, dir); err == nil {
						first, again = append(first, d1), append(again, d2)
					}
				}
				os.RemoveAll(dir)
				if err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "| start | to /readyz 200 (median of %d) | min | max |\n|---|---:|---:|---:|\n", runs)
			for _, row := range []struct {
				name string
				d    []time.Duration
			}{{"first start (creates certificates, admin user, streams)", first}, {"restart on the same data dir", again}} {
				slices.Sort(row.d)
				fmt.Fprintf(out, "| %s | %s | %s | %s |\n", row.name, ms(row.d[len(row.d)/2]), ms(row.d[0]), ms(row.d[len(row.d)-1]))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&runs, "runs", 5, "first starts and restarts to time")
	return cmd
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
}

// timeServe starts serve on dir, polls /readyz every 5 ms and stops it.
func timeServe(ctx context.Context, exe, dir string) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs bytes.Buffer
	cmd := exec.CommandContext(ctx, exe, "serve", "--data-dir", dir, "--http-addr", addr, "--coap-addr", "127.0.0.1:0", "--coaps-addr", "-",
		"--admin-password", "startup benchmark password", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = io.Discard, &logs
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	client := &http.Client{Timeout: time.Second}
	for {
		if resp, err := client.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				d := time.Since(start)
				stop()
				return d, nil
			}
		}
		select {
		case err := <-exited:
			return 0, fmt.Errorf("serve exited before it was ready (%v): %s", err, strings.TrimSpace(logs.String()))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Since(start) > time.Minute {
			stop()
			return 0, fmt.Errorf("serve not ready after 1 min: %s", strings.TrimSpace(logs.String()))
		}
	}
}

// finalText is what a terminal shows at the end of out: of a line redrawn
// with \r (a progress line) only its last state, and a progress line that
// was blanked at the end not at all.
func finalText(out string) string {
	lines := strings.Split(out, "\n")
	kept := lines[:0]
	for _, l := range lines {
		l = strings.TrimRight(l, "\r")
		if i := strings.LastIndex(l, "\r"); i >= 0 {
			l = l[i+1:]
			if strings.TrimSpace(l) == "" {
				continue
			}
		}
		kept = append(kept, strings.TrimRight(l, " "))
	}
	return strings.Join(kept, "\n")
}
