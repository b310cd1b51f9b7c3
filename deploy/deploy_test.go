package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/powercut/powercut/internal/testenv"
	"github.com/powercut/powercut/pclog"
	"github.com/powercut/powercut/record"
)

// exploreFlags are the explore flags of the test campaign (after --log): a real shell check that
// fails in two ways, every violation minimised so that they fall into several groups.
func exploreFlags(base string) []string {
	check := `a=$(od -An -tx1 -N1 "$POWERCUT_IMAGE" | tr -d ' '); b=$(od -An -tx1 -j8192 -N1 "$POWERCUT_IMAGE" | tr -d ' ')
if [ "$a" = bb ]; then echo "sector 0 still holds the base"; exit 1; fi
if [ "$a" = 03 ] && [ "$b" != 04 ]; then echo "block 2 holds $b, older than block 0"; exit 1; fi`
	return []string{"--base", base, "--model", "reorder", "--strategy", "exhaustive", "--minimize", "each", "--check", check}
}

// recording records a small history on a base image: two epochs of writes with a flush, a FUA
// write and marks.
func recording(t *testing.T, dir string) (logPath, basePath string) {
	t.Helper()
	basePath = filepath.Join(dir, "base.img")
	base := bytes.Repeat([]byte{0xBB}, 64<<10)
	if err := os.WriteFile(basePath, base, 0o644); err != nil {
		t.Fatal(err)
	}
	_, hash, err := pclog.HashBase(bytes.NewReader(base))
	if err != nil {
		t.Fatal(err)
	}
	logPath = filepath.Join(dir, "rec.pclog")
	h := pclog.Header{Devices: []pclog.Device{{ID: 0, Name: "disk", Size: 64 << 10, SectorSize: 512}},
		Bases: []pclog.BaseRef{{Device: 0, Size: int64(len(base)), Hash: hash, Path: basePath}}, Source: "test"}
	r, err := record.Create(logPath, h, []record.Store{record.NewCOWStore(bytes.NewReader(base), int64(len(base)))})
	if err != nil {
		t.Fatal(err)
	}
	d := r.Device(0)
	for i, err := range []error{
		d.WriteAt(bytes.Repeat([]byte{1}, 4096), 0, false),
		d.WriteAt(bytes.Repeat([]byte{2}, 4096), 8192, false),
		d.Flush(),
		r.Mark("one"),
		d.WriteAt(bytes.Repeat([]byte{3}, 1024), 0, false),
		d.WriteZeroes(16384, 4096, false),
		d.WriteAt(bytes.Repeat([]byte{4}, 512), 8192, true),
		r.Mark("two"),
	} {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return logPath, basePath
}

// buildPowercut builds the powercut binary into dir and returns its path.
func buildPowercut(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "powercut")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/powercut").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// comparable is a --json report without what legitimately differs between an unsharded run
// and a merge (time, the shard label, the replay commands' --base).
func comparable(t *testing.T, js []byte) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatalf("bad --json output: %v\n%s", err, js)
	}
	delete(m, "seconds")
	delete(m, "shard")
	delete(m, "replay_commands")
	b, _ := json.Marshal(m)
	return string(b)
}

// unsharded runs the exploration in one piece and returns its comparable report, checking it
// found violations in several groups.
func unsharded(t *testing.T, bin, logPath string, flags []string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"explore", "--log", logPath, "--json"}, flags...)...)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("unsharded run: %v (want exit 1: violations)\n%s", err, out)
	}
	var r struct {
		Violations []any `json:"violations"`
		Groups     []any `json:"groups"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.Violations) < 2 || len(r.Groups) < 2 {
		t.Fatalf("unsharded run: %v; %d violations in %d groups, want several of each", err, len(r.Violations), len(r.Groups))
	}
	return comparable(t, out)
}

func readJob(t *testing.T, name string) *batchv1.Job {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("kubernetes", name))
	if err != nil {
		t.Fatal(err)
	}
	var j batchv1.Job
	if err := yaml.UnmarshalStrict(b, &j); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if j.APIVersion != "batch/v1" || j.Kind != "Job" {
		t.Fatalf("%s: %s %s, want batch/v1 Job", name, j.APIVersion, j.Kind)
	}
	return &j
}

// policyAction applies a Job's pod failure policy to a pod whose container exited with code
// (or that has the condition cond) the way the Job controller does: the first matching rule
// wins; no match is the default handling ("" here, counted against the backoff limit).
func policyAction(j *batchv1.Job, container string, code int32, cond corev1.PodConditionType) batchv1.PodFailurePolicyAction {
	for _, r := range j.Spec.PodFailurePolicy.Rules {
		if e := r.OnExitCodes; e != nil && cond == "" {
			if e.ContainerName != nil && *e.ContainerName != container {
				continue
			}
			in := slices.Contains(e.Values, code)
			if (e.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn) == in {
				return r.Action
			}
		}
		for _, p := range r.OnPodConditions {
			if cond != "" && p.Type == cond {
				return r.Action
			}
		}
	}
	return ""
}

func envOf(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// The Kubernetes manifests parse strictly into the API types and say what the exit-code contract
// needs: an Indexed Job with one pod per shard, a per-index retry budget, exit 2 failing the
// index at once, exit 3 retried and counted, disruptions retried free; the merge Job agrees on
// the number of shards and the volume.
func TestKubernetesManifests(t *testing.T) {
	j := readJob(t, "shards-job.yaml")
	s := j.Spec
	if s.CompletionMode == nil || *s.CompletionMode != batchv1.IndexedCompletion {
		t.Fatalf("completionMode %v, want Indexed", s.CompletionMode)
	}
	if s.Completions == nil || *s.Completions < 2 || s.Parallelism == nil || *s.Parallelism < 1 || *s.Parallelism > *s.Completions {
		t.Fatalf("completions %v, parallelism %v: want N >= 2 shards and 1..N at once", s.Completions, s.Parallelism)
	}
	n := *s.Completions
	if s.BackoffLimitPerIndex == nil || *s.BackoffLimitPerIndex < 1 || s.MaxFailedIndexes == nil {
		t.Errorf("backoffLimitPerIndex %v, maxFailedIndexes %v: want a per-index retry budget and a failed-index limit", s.BackoffLimitPerIndex, s.MaxFailedIndexes)
	}
	if s.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %q: a pod failure policy needs Never", s.Template.Spec.RestartPolicy)
	}
	if len(s.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(s.Template.Spec.Containers))
	}
	c := s.Template.Spec.Containers[0]
	if got := envOf(c, "POWERCUT_SHARDS"); got != strconv.Itoa(int(n)) {
		t.Errorf("POWERCUT_SHARDS %q, completions %d: they must agree", got, n)
	}
	// One core of its own per shard: a Guaranteed pod (requests = limits) with a whole CPU.
	req, lim := c.Resources.Requests, c.Resources.Limits
	if cpu := req.Cpu(); cpu.MilliValue() != 1000 || !cpu.Equal(*lim.Cpu()) || req.Memory().IsZero() || !req.Memory().Equal(*lim.Memory()) {
		t.Errorf("resources %+v: want cpu 1 and memory requested = limited (a Guaranteed pod, one core of its own)", c.Resources)
	}
	if !strings.Contains(strings.Join(c.Command, " "), "JOB_COMPLETION_INDEX") || !strings.Contains(strings.Join(c.Command, " "), "--resume") {
		t.Errorf("the shard command names neither its results file by JOB_COMPLETION_INDEX nor resumes it: %q", c.Command)
	}
	for _, w := range []struct {
		code int32
		cond corev1.PodConditionType
		want batchv1.PodFailurePolicyAction
	}{
		{2, "", batchv1.PodFailurePolicyActionFailIndex},
		{3, "", batchv1.PodFailurePolicyActionCount},
		{0, corev1.DisruptionTarget, batchv1.PodFailurePolicyActionIgnore},
	} {
		if s.PodFailurePolicy == nil {
			t.Fatal("no podFailurePolicy")
		}
		if got := policyAction(j, c.Name, w.code, w.cond); got != w.want {
			t.Errorf("shards: exit %d / condition %q -> %q, want %q", w.code, w.cond, got, w.want)
		}
	}

	m := readJob(t, "merge-job.yaml")
	if m.Spec.CompletionMode != nil && *m.Spec.CompletionMode == batchv1.IndexedCompletion {
		t.Error("the merge Job is indexed: it is one pod")
	}
	mc := m.Spec.Template.Spec.Containers[0]
	if envOf(mc, "POWERCUT_SHARDS") != envOf(c, "POWERCUT_SHARDS") || envOf(mc, "POWERCUT_RESULTS") != envOf(c, "POWERCUT_RESULTS") {
		t.Errorf("merge POWERCUT_SHARDS/RESULTS %q %q, shards %q %q: they must agree", envOf(mc, "POWERCUT_SHARDS"), envOf(mc, "POWERCUT_RESULTS"),
			envOf(c, "POWERCUT_SHARDS"), envOf(c, "POWERCUT_RESULTS"))
	}
	for code, want := range map[int32]batchv1.PodFailurePolicyAction{1: batchv1.PodFailurePolicyActionFailJob, 2: batchv1.PodFailurePolicyActionFailJob, 3: batchv1.PodFailurePolicyActionCount} {
		if got := policyAction(m, mc.Name, code, ""); got != want {
			t.Errorf("merge: exit %d -> %q, want %q", code, got, want)
		}
	}

	b, err := os.ReadFile("kubernetes/pvc.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pvc corev1.PersistentVolumeClaim
	if err := yaml.UnmarshalStrict(b, &pvc); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteMany) {
		t.Errorf("pvc access modes %v: every shard mounts it at once, want ReadWriteMany", pvc.Spec.AccessModes)
	}
	for _, job := range []*batchv1.Job{j, m} {
		v := job.Spec.Template.Spec.Volumes
		if len(v) != 1 || v[0].PersistentVolumeClaim == nil || v[0].PersistentVolumeClaim.ClaimName != pvc.Name {
			t.Errorf("%s: volumes %+v, want the claim %s", job.Name, v, pvc.Name)
		}
	}
}

// runContainer runs a manifest container's command locally with the manifest's environment
// (overridden by env) and returns its exit code.
func runContainer(t *testing.T, c corev1.Container, args []string, env map[string]string, pathDir string) (int, string) {
	t.Helper()
	all := append(append([]string{}, c.Command...), args...)
	cmd := exec.Command(all[0], all[1:]...)
	cmd.Env = append(os.Environ(), "PATH="+pathDir+":"+os.Getenv("PATH"))
	for _, e := range c.Env {
		if _, ok := env[e.Name]; !ok {
			cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// The Kubernetes containers' scripts, run as the Job controller runs them (one per index, then
// a retry of one index, then the merge), give exactly the unsharded report; bad input exits 2
// (which the policy turns into FailIndex).
func TestKubernetesScriptsMatchUnshardedRun(t *testing.T) {
	testenv.RequireTool(t, "go", "od")
	dir := t.TempDir()
	bin := buildPowercut(t, dir)
	logPath, base := recording(t, dir)
	flags := exploreFlags(base)
	want := unsharded(t, bin, logPath, flags)

	shards := readJob(t, "shards-job.yaml")
	c := shards.Spec.Template.Spec.Containers[0]
	n := int(*shards.Spec.Completions)
	results := filepath.Join(dir, "results")
	env := map[string]string{"POWERCUT_LOG": logPath, "POWERCUT_RESULTS": results}
	for i := 0; i < n; i++ {
		env["JOB_COMPLETION_INDEX"] = strconv.Itoa(i)
		if code, out := runContainer(t, c, flags, env, dir); code != 0 {
			t.Fatalf("index %d: exit %d (violations are a shard's result: want 0)\n%s", i, code, out)
		}
	}
	// A retried index continues its journal and checks nothing again.
	before, _ := os.ReadFile(filepath.Join(results, "1.jsonl"))
	env["JOB_COMPLETION_INDEX"] = "1"
	if code, out := runContainer(t, c, flags, env, dir); code != 0 {
		t.Fatalf("retried index 1: exit %d\n%s", code, out)
	}
	after, _ := os.ReadFile(filepath.Join(results, "1.jsonl"))
	if !bytes.HasPrefix(after, before) || bytes.Count(after, []byte(`{"checked"`)) != bytes.Count(before, []byte(`{"checked"`)) {
		t.Errorf("the retried index rewrote its journal or checked again (%d -> %d checked lines)",
			bytes.Count(before, []byte(`{"checked"`)), bytes.Count(after, []byte(`{"checked"`)))
	}

	merge := readJob(t, "merge-job.yaml")
	mc := merge.Spec.Template.Spec.Containers[0]
	if code, out := runContainer(t, mc, nil, map[string]string{"POWERCUT_RESULTS": results}, dir); code != 1 {
		t.Fatalf("merge: exit %d, want 1 (violations)\n%s", code, out)
	}
	got, err := os.ReadFile(filepath.Join(results, "merged.json"))
	if err != nil {
		t.Fatal(err)
	}
	if g := comparable(t, got); g != want {
		t.Errorf("merged report differs from the unsharded run:\ngot  %s\nwant %s", g, want)
	}

	// Bad input: exit 2, which the policy maps to FailIndex (no retry).
	env = map[string]string{"POWERCUT_LOG": logPath, "POWERCUT_RESULTS": filepath.Join(dir, "bad"), "JOB_COMPLETION_INDEX": "0"}
	code, out := runContainer(t, c, append(flags, "--model", "nonsense"), env, dir)
	if code != 2 || policyAction(shards, c.Name, int32(code), "") != batchv1.PodFailurePolicyActionFailIndex {
		t.Errorf("bad input: exit %d (policy %q), want 2 -> FailIndex\n%s", code, policyAction(shards, c.Name, int32(code), ""), out)
	}
}

// slurm is a single-node Slurm cluster (munged, slurmctld, slurmd) in a temporary directory.
type slurm struct {
	dir string
	env []string
}

// startSlurm starts munged, slurmctld and slurmd as root with a minimal configuration in a
// temporary directory, waits until the node is idle, and registers their shutdown. It skips
// the test where Slurm cannot start.
func startSlurm(t *testing.T) *slurm {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol", "scancel")
	dir := t.TempDir()
	for _, d := range []string{"munge", "state", "spool"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ = strings.Cut(host, ".")
	ports := freePorts(t, 2)
	sock := filepath.Join(dir, "munge", "munge.sock")
	conf := filepath.Join(dir, "slurm.conf")
	cfg := fmt.Sprintf(`ClusterName=powercut-test
SlurmctldHost=%[1]s(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=%[2]s
CredType=cred/munge
StateSaveLocation=%[3]s/state
SlurmdSpoolDir=%[3]s/spool
SlurmctldPidFile=%[3]s/slurmctld.pid
SlurmdPidFile=%[3]s/slurmd.pid
SlurmctldPort=%[4]d
SlurmdPort=%[5]d
SlurmctldLogFile=%[3]s/slurmctld.log
SlurmdLogFile=%[3]s/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=%[1]s NodeAddr=127.0.0.1 CPUs=%[6]d State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
`, host, sock, dir, ports[0], ports[1], runtime.NumCPU())
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &slurm{dir: dir, env: append(os.Environ(), "SLURM_CONF="+conf)}
	key := filepath.Join(dir, "munge", "munge.key")
	if out, err := exec.Command("mungekey", "--create", "--keyfile="+key).CombinedOutput(); err != nil {
		t.Skipf("skipping: Slurm cannot start: mungekey: %v\n%s", err, out)
	}
	s.daemon(t, "munged", "-F", "--force", "--socket="+sock, "--key-file="+key, "--pid-file="+filepath.Join(dir, "munge", "munged.pid"),
		"--seed-file="+filepath.Join(dir, "munge", "munged.seed"), "--log-file="+filepath.Join(dir, "munge", "munged.log"))
	if !waitFor(10*time.Second, func() bool { _, err := os.Stat(sock); return err == nil }) {
		t.Skipf("skipping: Slurm cannot start: munged did not create its socket\n%s", s.logs())
	}
	s.daemon(t, "slurmctld", "-D", "-c", "-i")
	s.daemon(t, "slurmd", "-D")
	// Cancel whatever is left before the daemons stop (cleanups run last-registered first).
	t.Cleanup(func() { s.run(t, "scancel", "--full", "--partition=test") })
	if !waitFor(60*time.Second, func() bool {
		out, err := s.output("sinfo", "-h", "-N", "-o", "%T")
		return err == nil && strings.TrimSpace(out) == "idle"
	}) {
		out, _ := s.output("sinfo", "-N")
		t.Skipf("skipping: Slurm cannot start: the node is not idle after 60s (sinfo: %s)\n%s", out, s.logs())
	}
	return s
}

// daemon starts a Slurm or munge daemon in the foreground and registers its shutdown.
func (s *slurm) daemon(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = s.env
	f, err := os.Create(filepath.Join(s.dir, name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Skipf("skipping: Slurm cannot start: %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
}

func (s *slurm) output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *slurm) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := s.output(name, args...)
	if err != nil {
		t.Errorf("%s %v: %v\n%s", name, args, err, out)
	}
	return out
}

// logs returns the tail of every daemon log, for a skip or failure message.
func (s *slurm) logs() string {
	var b strings.Builder
	for _, f := range []string{"munged.out", "slurmctld.out", "slurmd.out", "slurmctld.log", "slurmd.log"} {
		data, err := os.ReadFile(filepath.Join(s.dir, f))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		fmt.Fprintf(&b, "--- %s\n%s\n", f, strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
	return b.String()
}

// jobStates returns the state and exit code of every task of a job ("" while it is unknown).
func (s *slurm) jobStates(id string) map[string][2]string {
	out, err := s.output("scontrol", "-o", "show", "job", id)
	if err != nil {
		return nil
	}
	res := map[string][2]string{}
	field := func(line, k string) string {
		m := regexp.MustCompile(`(?:^| )` + k + `=(\S*)`).FindStringSubmatch(line)
		if m == nil {
			return ""
		}
		return m[1]
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		task := field(line, "JobId")
		if task == "" {
			continue
		}
		if a := field(line, "ArrayTaskId"); a != "" {
			task = a
		}
		res[task] = [2]string{field(line, "JobState"), field(line, "ExitCode")}
	}
	return res
}

// waitJob waits until every task of job id is finished and returns their states.
func (s *slurm) waitJob(t *testing.T, id string, timeout time.Duration) map[string][2]string {
	t.Helper()
	var st map[string][2]string
	if !waitFor(timeout, func() bool {
		st = s.jobStates(id)
		if len(st) == 0 {
			return false
		}
		for _, v := range st {
			switch v[0] {
			case "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "":
				return false
			}
		}
		return true
	}) {
		t.Fatalf("job %s not finished after %s: %v\n%s", id, timeout, st, s.logs())
	}
	return st
}

var submitted = regexp.MustCompile(`shards: job array (\d+) .*; merge: job (\d+)`)

// The Slurm job array (deploy/slurm/submit.sh) explores a recording in 3 shards on a real
// single-node Slurm, its dependent merge job gives exactly the unsharded report, and bad input
// fails the tasks with exit 2 and cancels the merge.
func TestSlurmArrayMatchesUnshardedRun(t *testing.T) {
	testenv.RequireTool(t, "go", "od")
	s := startSlurm(t)
	dir := t.TempDir()
	bin := buildPowercut(t, dir)
	logPath, base := recording(t, dir)
	flags := exploreFlags(base)
	want := unsharded(t, bin, logPath, flags)
	// POWERCUT is a wrapper that notes the CPUs each array task may run on, then runs powercut.
	cpus := filepath.Join(dir, "cpus")
	if err := os.Mkdir(cpus, 0o755); err != nil {
		t.Fatal(err)
	}
	wrap := filepath.Join(dir, "powercut-wrap")
	script := fmt.Sprintf("#!/bin/sh\nif [ -n \"${SLURM_ARRAY_TASK_ID:-}\" ]; then sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status > %s/\"$SLURM_ARRAY_TASK_ID\"; fi\nexec %s \"$@\"\n", cpus, bin)
	if err := os.WriteFile(wrap, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s.env = append(s.env, "POWERCUT="+wrap)

	const n = 3
	results := filepath.Join(dir, "results")
	out, err := s.output("./slurm/submit.sh", append([]string{logPath, strconv.Itoa(n), results, "--"}, flags...)...)
	m := submitted.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("submit.sh: %v\n%s", err, out)
	}
	tasks := s.waitJob(t, m[1], 3*time.Minute)
	if len(tasks) != n {
		t.Errorf("the array ran %d tasks, want %d: %v", len(tasks), n, tasks)
	}
	for task, st := range tasks {
		if st != [2]string{"COMPLETED", "0:0"} {
			out, _ := os.ReadFile(filepath.Join(results, "shard-"+task+".out"))
			t.Errorf("task %s: %v, want COMPLETED 0:0\n%s", task, st, out)
		}
	}
	// One core per task (shard.sbatch's --cpus-per-task=1, bound by task/affinity): each
	// shard's explore must have run on exactly one CPU.
	for i := 0; i < n; i++ {
		b, err := os.ReadFile(filepath.Join(cpus, strconv.Itoa(i)))
		if got := strings.TrimSpace(string(b)); err != nil || strings.ContainsAny(got, ",-") || got == "" {
			t.Errorf("shard %d ran on CPUs %q (%v), want one core of its own", i, got, err)
		}
	}
	merge := s.waitJob(t, m[2], time.Minute)
	mout, _ := os.ReadFile(filepath.Join(results, "merge.out"))
	if st := merge[m[2]]; st != [2]string{"FAILED", "1:0"} {
		t.Fatalf("merge job: %v, want FAILED with exit 1 (violations)\n%s", st, mout)
	}
	for i := 0; i < n; i++ {
		b, err := os.ReadFile(filepath.Join(results, fmt.Sprintf("%d.jsonl", i)))
		if err != nil || !bytes.Contains(b, fmt.Appendf(nil, `"shard":{"index":%d,"count":%d}`, i, n)) {
			t.Errorf("shard %d's results: %v (not labelled shard %d/%d)", i, err, i, n)
		}
	}
	got, err := os.ReadFile(filepath.Join(results, "merged.json"))
	if err != nil {
		t.Fatalf("%v\n%s", err, mout)
	}
	if g := comparable(t, got); g != want {
		t.Errorf("merged report differs from the unsharded run:\ngot  %s\nwant %s", g, want)
	}
	if !strings.Contains(string(mout), "group(s) of the same cause") {
		t.Errorf("the merge job's output has no report:\n%s", mout)
	}

	// Bad input: every task exits 2, the merge never runs.
	bad := filepath.Join(dir, "bad")
	out, err = s.output("./slurm/submit.sh", append([]string{logPath, "2", bad, "--"}, append(flags, "--model", "nonsense")...)...)
	m = submitted.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("submit.sh: %v\n%s", err, out)
	}
	for task, st := range s.waitJob(t, m[1], 2*time.Minute) {
		if st != [2]string{"FAILED", "2:0"} {
			t.Errorf("bad input, task %s: %v, want FAILED 2:0", task, st)
		}
	}
	if st := s.waitJob(t, m[2], time.Minute)[m[2]]; st[0] != "CANCELLED" {
		t.Errorf("bad input, merge job: %v, want CANCELLED (its dependency can never be met)", st)
	}
	if _, err := os.Stat(filepath.Join(bad, "merged.jsonl")); err == nil {
		t.Error("bad input: a merged file was written")
	}
}

// freePorts returns n TCP ports free on localhost now.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func waitFor(d time.Duration, ok func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if ok() {
			return true
		}
	}
	return ok()
}
