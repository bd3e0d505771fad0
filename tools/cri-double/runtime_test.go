package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const channelSpec = `cdiVersion: "0.6.0"
kind: k8s.compute-domain.nvidia.com/claim
devices:
- name: uid-1-channel-0
  containerEdits:
    env: ["COMPUTE_DOMAIN_UUID=dom-1"]
    deviceNodes:
    - {path: /dev/nvidia-caps-imex-channels/channel0, type: c, major: 234, minor: 0, fileMode: 0666}
    mounts:
    - {hostPath: /tmp/imex-config, containerPath: /imexd, options: [rbind, ro]}
`

func newTestRuntime(t *testing.T) (*Runtime, string) {
	t.Helper()
	specDir, state := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(specDir, "claim.yaml"), []byte(channelSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"containers", "logs", "work"} {
		_ = os.MkdirAll(filepath.Join(state, d), 0o755)
	}
	rt := NewRuntime(Options{
		StateDir: state, SpecDirs: []string{specDir}, PodCIDR: netip.MustParsePrefix("127.3.0.0/16"),
		Commands: CommandMap{"/bin/sh": {"/bin/sh"}}, APIServer: "127.0.0.1:6443",
	})
	return rt, state
}

func sandbox(t *testing.T, rt *Runtime) (string, *runtimeapi.PodSandboxConfig) {
	t.Helper()
	cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns", Uid: "u1"}}
	resp, err := rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	status, err := rt.PodSandboxStatus(context.Background(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: resp.PodSandboxId})
	if err != nil {
		t.Fatal(err)
	}
	if ip := status.Status.GetNetwork().GetIp(); ip != "127.3.0.1" || len(status.Status.GetNetwork().GetAdditionalIps()) != 0 {
		t.Fatalf("pod IP %q (additional %v), want only 127.3.0.1", ip, status.Status.GetNetwork().GetAdditionalIps())
	}
	return resp.PodSandboxId, cfg
}

func TestCreateContainerRecordsCDIResolution(t *testing.T) {
	rt, state := newTestRuntime(t)
	id, cfg := sandbox(t, rt)
	resp, err := rt.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{
		PodSandboxId: id, SandboxConfig: cfg,
		Config: &runtimeapi.ContainerConfig{
			Metadata:   &runtimeapi.ContainerMetadata{Name: "c"},
			Image:      &runtimeapi.ImageSpec{Image: "busybox"},
			Command:    []string{"sleep"},
			Envs:       []*runtimeapi.KeyValue{{Key: "A", Value: []byte("1")}},
			CDIDevices: []*runtimeapi.CDIDevice{{Name: "k8s.compute-domain.nvidia.com/claim=uid-1-channel-0"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	status, err := rt.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: resp.ContainerId})
	if err != nil {
		t.Fatal(err)
	}
	if lp := status.Status.GetLogPath(); !filepath.IsAbs(lp) || !strings.HasPrefix(lp, state) {
		t.Fatalf("log path %q: the kubelet removes <log path>* with a container, so it must be absolute and ours", lp)
	}
	data, err := os.ReadFile(filepath.Join(state, "containers", resp.ContainerId+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	want := DeviceNode{Path: "/dev/nvidia-caps-imex-channels/channel0", Type: "c", Major: 234, Minor: 0, FileMode: "0666"}
	if len(rec.CDI.DeviceNodes) != 1 || rec.CDI.DeviceNodes[0] != want {
		t.Fatalf("device nodes %+v, want [%+v]", rec.CDI.DeviceNodes, want)
	}
	if !slices.Equal(rec.CDI.AddedEnv, []string{"COMPUTE_DOMAIN_UUID=dom-1"}) || !slices.Contains(rec.CDI.Env, "A=1") {
		t.Fatalf("env %v, added %v", rec.CDI.Env, rec.CDI.AddedEnv)
	}
	if len(rec.CDI.Mounts) != 1 || rec.CDI.Mounts[0].ContainerPath != "/imexd" || rec.CDI.Mounts[0].HostPath != "/tmp/imex-config" {
		t.Fatalf("mounts %+v", rec.CDI.Mounts)
	}
	if rec.PodNamespace != "ns" || rec.PodName != "p" || rec.PodUID != "u1" || rec.Container != "c" || rec.HostCommand != nil {
		t.Fatalf("record %+v", rec)
	}
}

func TestUnresolvableDeviceFailsCreate(t *testing.T) {
	rt, state := newTestRuntime(t)
	id, cfg := sandbox(t, rt)
	_, err := rt.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{
		PodSandboxId: id, SandboxConfig: cfg,
		Config: &runtimeapi.ContainerConfig{
			Metadata:   &runtimeapi.ContainerMetadata{Name: "c"},
			Image:      &runtimeapi.ImageSpec{Image: "busybox"},
			CDIDevices: []*runtimeapi.CDIDevice{{Name: "k8s.compute-domain.nvidia.com/claim=missing"}},
		},
	})
	if err == nil || !strings.Contains(err.Error(), "unresolvable CDI devices k8s.compute-domain.nvidia.com/claim=missing") {
		t.Fatalf("error %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(state, "containers")); len(entries) != 0 {
		t.Fatalf("a failed create left records: %v", entries)
	}
}

func TestMappedContainerRunsAsHostProcess(t *testing.T) {
	rt, state := newTestRuntime(t)
	id, cfg := sandbox(t, rt)
	marker := filepath.Join(t.TempDir(), "ready")
	ctx := context.Background()
	resp, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: id, SandboxConfig: cfg,
		Config: &runtimeapi.ContainerConfig{
			Metadata:   &runtimeapi.ContainerMetadata{Name: "c"},
			Image:      &runtimeapi.ImageSpec{Image: "busybox"},
			Command:    []string{"/bin/sh", "-c"},
			Args:       []string{`trap 'exit 3' TERM; echo "$COMPUTE_DOMAIN_UUID $KUBERNETES_SERVICE_HOST"; while :; do sleep 0.05; done`},
			CDIDevices: []*runtimeapi.CDIDevice{{Name: "k8s.compute-domain.nvidia.com/claim=uid-1-channel-0"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cid := resp.ContainerId
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cid}); err != nil {
		t.Fatal(err)
	}
	probe := func() int32 {
		r, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"/bin/sh", "-c", "test -f " + marker}, Timeout: 5})
		if err != nil {
			t.Fatal(err)
		}
		return r.ExitCode
	}
	if code := probe(); code != 1 {
		t.Fatalf("probe before the file exists: exit %d, want 1", code)
	}
	_ = os.WriteFile(marker, nil, 0o644)
	if code := probe(); code != 0 {
		t.Fatalf("probe after the file exists: exit %d, want 0", code)
	}
	unmapped, _ := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"cat", "/x"}})
	if unmapped.ExitCode != 127 {
		t.Fatalf("unmapped probe command: exit %d, want 127", unmapped.ExitCode)
	}
	// The shell prints its line after setting its TERM trap: stop it only then.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := os.ReadFile(filepath.Join(state, "logs", cid+".log"))
		if strings.Contains(string(out), "dom-1 127.0.0.1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process log %q lacks the CDI env and API server address", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: cid, Timeout: 5}); err != nil {
		t.Fatal(err)
	}
	status, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cid})
	if err != nil {
		t.Fatal(err)
	}
	if status.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED || status.Status.ExitCode != 3 {
		t.Fatalf("after stop: %v exit %d, want exited with 3 (the TERM trap)", status.Status.State, status.Status.ExitCode)
	}
}

func TestHostPathRewritesMountedPaths(t *testing.T) {
	mounts := []Mount{{ContainerPath: "/imexd", HostPath: "/host/imex"}, {ContainerPath: "/imexd/sub", HostPath: "/other"}}
	for in, want := range map[string]string{
		"/imexd": "/host/imex", "/imexd/config.cfg": "/host/imex/config.cfg", "/imexd/sub/x": "/other/x",
		"/imexdx": "/imexdx", "plain": "plain",
	} {
		if got := hostPath(in, mounts); got != want {
			t.Errorf("hostPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPodIPStaysOnLoopback(t *testing.T) {
	if _, err := podIP(netip.MustParsePrefix("10.0.0.0/16"), 0); err == nil {
		t.Fatal("a private-range prefix was accepted")
	}
	ip, err := podIP(netip.MustParsePrefix("127.2.0.0/16"), 300)
	if err != nil || ip.String() != "127.2.1.45" {
		t.Fatalf("podIP = %v, %v", ip, err)
	}
}

func TestLogPathIsNeverRelative(t *testing.T) {
	for _, c := range []struct{ dir, rel, want string }{
		{"/var/log/pods/ns_p_u", "main/0.log", "/var/log/pods/ns_p_u/main/0.log"},
		{"", "", "/state/logs/id.cri.log"},
		{"relative", "main/0.log", "/state/logs/id.cri.log"},
		{"/var/log/pods/ns_p_u", "", "/state/logs/id.cri.log"},
	} {
		if got := logPath("/state", "id", c.dir, c.rel); got != c.want {
			t.Errorf("logPath(%q, %q) = %q, want %q", c.dir, c.rel, got, c.want)
		}
	}
}

func TestHostEnvPointsAtTheAPIServerAndHostPaths(t *testing.T) {
	mounts := []Mount{{ContainerPath: "/imexd", HostPath: "/host/imex"}}
	env := hostEnv([]string{"KUBERNETES_SERVICE_HOST=10.0.0.1", "KUBERNETES_PORT_443_TCP_ADDR=10.0.0.1",
		"KUBERNETES_NODE=keep", "CONFIG=/imexd/config.cfg"}, mounts, "127.0.0.1:6443", "/state/rec.json")
	for _, want := range []string{"KUBERNETES_SERVICE_HOST=127.0.0.1", "KUBERNETES_SERVICE_PORT=6443",
		"KUBERNETES_NODE=keep", "CONFIG=/host/imex/config.cfg", "CRI_DOUBLE_RECORD=/state/rec.json",
		`CRI_DOUBLE_MOUNTS=[{"containerPath":"/imexd","hostPath":"/host/imex"}]`} {
		if !slices.Contains(env, want) {
			t.Errorf("env lacks %q: %v", want, env)
		}
	}
	for _, kv := range env {
		if strings.Contains(kv, "10.0.0.1") {
			t.Errorf("service IP left in %q", kv)
		}
	}
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		t.Errorf("no PATH in %v", env)
	}
}
