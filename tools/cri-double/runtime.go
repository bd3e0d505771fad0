package main

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	apitest "k8s.io/cri-api/pkg/apis/testing"
	"k8s.io/cri-client/pkg/fake"
)

// Options configure the runtime double.
type Options struct {
	StateDir string
	SpecDirs []string
	Commands CommandMap
	PodCIDR  netip.Prefix
	// APIServer ("127.0.0.1:6443") replaces the Kubernetes service variables of host processes.
	APIServer string
}

// container is what the double keeps per created container beyond the fake's own state.
type container struct {
	record  Record
	recPath string
	env     []string // host environment of the process and its probes
	mounts  []Mount
	process *hostProcess
}

// Runtime is the fake CRI runtime with the behaviour real kubelets need from a test bed: loopback
// pod IPs, CDI resolution and host processes for mapped commands. Unlisted calls are the fake's.
type Runtime struct {
	*fake.RemoteRuntime
	opts Options

	mu         sync.Mutex
	containers map[string]*container
	podIPs     map[string]netip.Addr
	nextIP     int
}

// NewRuntime wraps a fresh fake runtime.
func NewRuntime(opts Options) *Runtime {
	f := fake.NewFakeRemoteRuntime()
	f.RuntimeService.FakeStatus = &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: true},
		{Type: runtimeapi.NetworkReady, Status: true},
	}}
	// The kubelet's CRI client rejects images of size 0, the fake's default.
	f.ImageService.FakeImageSize = 1 << 20
	// The fake reports 192.168.192.168 unless told otherwise; pods here live on loopback only.
	first, _ := podIP(opts.PodCIDR, 0)
	apitest.FakePodSandboxIPs = []string{first.String()}
	return &Runtime{RemoteRuntime: f, opts: opts, containers: map[string]*container{}, podIPs: map[string]netip.Addr{}}
}

// podIP is the n-th address after the network address of a loopback prefix.
func podIP(prefix netip.Prefix, n int) (netip.Addr, error) {
	if !netip.MustParsePrefix("127.0.0.0/8").Contains(prefix.Addr()) || prefix.Bits() < 8 {
		return netip.Addr{}, fmt.Errorf("pod CIDR %s is not inside 127.0.0.0/8", prefix)
	}
	size := 1 << (32 - prefix.Bits())
	if size <= 2 {
		return netip.Addr{}, fmt.Errorf("pod CIDR %s has no host addresses", prefix)
	}
	base := prefix.Masked().Addr().As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	v += uint32(1 + n%(size-2))
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), nil
}

// RunPodSandbox gives each sandbox its own loopback address, kept across its status calls.
func (r *Runtime) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	resp, err := r.RemoteRuntime.RunPodSandbox(ctx, req)
	if err != nil {
		return nil, err
	}
	id := resp.GetPodSandboxId()
	r.mu.Lock()
	ip, ok := r.podIPs[id]
	if !ok {
		ip, err = podIP(r.opts.PodCIDR, r.nextIP)
		r.nextIP++
		r.podIPs[id] = ip
	}
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	rs := r.RuntimeService
	rs.Lock()
	if s, ok := rs.Sandboxes[id]; ok {
		s.Network = &runtimeapi.PodSandboxNetworkStatus{Ip: ip.String()}
	}
	rs.Unlock()
	return resp, nil
}

// RemovePodSandbox also stops host processes of containers the kubelet did not stop first.
func (r *Runtime) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	r.mu.Lock()
	var doomed []string
	for id, c := range r.containers {
		if c.record.SandboxID == req.GetPodSandboxId() {
			doomed = append(doomed, id)
		}
	}
	delete(r.podIPs, req.GetPodSandboxId())
	r.mu.Unlock()
	for _, id := range doomed {
		r.forget(id, 0)
	}
	return r.RemoteRuntime.RemovePodSandbox(ctx, req)
}

// CreateContainer resolves the container's CDI devices like containerd (failing the call with the
// CDI library's error when one cannot be resolved) and records what the container would receive.
func (r *Runtime) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	config, sandbox := req.GetConfig(), req.GetSandboxConfig()
	devices, err := requestedDevices(config)
	if err != nil {
		return nil, err
	}
	res, err := resolve(r.opts.SpecDirs, devices, ociEnv(config.GetEnvs()))
	if err != nil {
		log.Printf("CreateContainer %s/%s %s: %v", sandbox.GetMetadata().GetNamespace(),
			sandbox.GetMetadata().GetName(), config.GetMetadata().GetName(), err)
		return nil, err
	}
	resp, err := r.RemoteRuntime.CreateContainer(ctx, req)
	if err != nil {
		return nil, err
	}
	id := resp.GetContainerId()
	r.setLogPath(id, logPath(r.opts.StateDir, id, sandbox.GetLogDirectory(), config.GetLogPath()))
	mounts := append(criMounts(config.GetMounts()), res.Mounts...)
	rec := Record{
		ID: id, SandboxID: req.GetPodSandboxId(),
		PodNamespace: sandbox.GetMetadata().GetNamespace(), PodName: sandbox.GetMetadata().GetName(),
		PodUID: sandbox.GetMetadata().GetUid(), Container: config.GetMetadata().GetName(),
		Attempt: config.GetMetadata().GetAttempt(), Image: config.GetImage().GetImage(),
		Command: config.GetCommand(), Args: config.GetArgs(), Env: ociEnv(config.GetEnvs()),
		CDIDevices: devices, CDI: res, Mounts: criMounts(config.GetMounts()),
	}
	// Only an explicit command is mapped: with args alone a real runtime runs the image's
	// entrypoint, which the double does not know.
	if len(config.GetCommand()) > 0 {
		rec.HostCommand = r.opts.Commands.hostArgv(slices.Concat(config.GetCommand(), config.GetArgs()))
	}
	if rec.CDIDevices == nil {
		rec.CDIDevices = []string{}
	}
	if rec.HostCommand != nil {
		rec.LogFile = filepath.Join(r.opts.StateDir, "logs", id+".log")
	}
	recPath := filepath.Join(r.opts.StateDir, "containers", id+".json")
	if err := writeJSON(recPath, rec); err != nil {
		return nil, fmt.Errorf("recording container %s: %w", id, err)
	}
	r.mu.Lock()
	r.containers[id] = &container{record: rec, recPath: recPath, mounts: mounts,
		env: hostEnv(res.Env, mounts, r.opts.APIServer, recPath)}
	r.mu.Unlock()
	return resp, nil
}

// logPath is where the container's log would be, as a real runtime reports it. It is never
// empty: the kubelet removes "<log path>*" when it removes a container, and an empty path globs
// its working directory.
func logPath(stateDir, id, logDir, rel string) string {
	if filepath.IsAbs(logDir) && rel != "" {
		return filepath.Join(logDir, rel)
	}
	return filepath.Join(stateDir, "logs", id+".cri.log")
}

func (r *Runtime) setLogPath(id, path string) {
	rs := r.RuntimeService
	rs.Lock()
	defer rs.Unlock()
	if c, ok := rs.Containers[id]; ok {
		c.LogPath = path
	}
}

// StartContainer starts the host process of a mapped container; the container's state then
// follows the process.
func (r *Runtime) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	id := req.GetContainerId()
	r.mu.Lock()
	c := r.containers[id]
	r.mu.Unlock()
	if c == nil || c.record.HostCommand == nil {
		return r.RemoteRuntime.StartContainer(ctx, req)
	}
	p, err := startProcess(c.record.HostCommand, c.env, workDir(r.opts.StateDir, id), c.record.LogFile)
	if err != nil {
		r.setExited(id, 128, "StartError", err.Error())
		return nil, fmt.Errorf("starting %q: %w", c.record.HostCommand, err)
	}
	r.mu.Lock()
	c.process = p
	r.mu.Unlock()
	resp, err := r.RemoteRuntime.StartContainer(ctx, req)
	go func() {
		<-p.done
		reason := "Completed"
		if p.exitCode != 0 {
			reason = "Error"
		}
		r.setExited(id, p.exitCode, reason, "")
	}()
	return resp, err
}

func (r *Runtime) setExited(id string, code int32, reason, message string) {
	rs := r.RuntimeService
	rs.Lock()
	defer rs.Unlock()
	if c, ok := rs.Containers[id]; ok {
		c.State = runtimeapi.ContainerState_CONTAINER_EXITED
		c.ExitCode, c.Reason, c.Message = code, reason, message
		c.FinishedAt = time.Now().UnixNano()
	}
}

// StopContainer stops the host process (SIGTERM, SIGKILL after the grace period) before the
// fake marks the container exited.
func (r *Runtime) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	r.mu.Lock()
	c := r.containers[req.GetContainerId()]
	r.mu.Unlock()
	if c != nil && c.process != nil {
		c.process.stop(time.Duration(req.GetTimeout()) * time.Second)
	}
	return r.RemoteRuntime.StopContainer(ctx, req)
}

// RemoveContainer kills a process still running; the container's record file stays for tests.
func (r *Runtime) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	r.forget(req.GetContainerId(), 0)
	return r.RemoteRuntime.RemoveContainer(ctx, req)
}

func (r *Runtime) forget(id string, grace time.Duration) {
	r.mu.Lock()
	c := r.containers[id]
	delete(r.containers, id)
	r.mu.Unlock()
	if c != nil && c.process != nil {
		c.process.stop(grace)
	}
}

// ExecSync runs a probe command through the command map with the container's environment. A
// mapped container whose probe command is not mapped fails the probe (exit 127) rather than
// passing it unchecked; unmapped containers keep the fake's always-succeeding exec.
func (r *Runtime) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	id := req.GetContainerId()
	r.mu.Lock()
	c := r.containers[id]
	r.mu.Unlock()
	if c == nil {
		return r.RemoteRuntime.ExecSync(ctx, req)
	}
	argv := r.opts.Commands.hostArgv(req.GetCmd())
	if argv == nil {
		if c.record.HostCommand == nil {
			return r.RemoteRuntime.ExecSync(ctx, req)
		}
		msg := fmt.Sprintf("cri-double: %q is not in the command map\n", req.GetCmd())
		return &runtimeapi.ExecSyncResponse{Stderr: []byte(msg), ExitCode: 127}, nil
	}
	stdout, stderr, code, err := runProbe(ctx, argv, c.env, workDir(r.opts.StateDir, id),
		time.Duration(req.GetTimeout())*time.Second)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecSyncResponse{Stdout: stdout, Stderr: stderr, ExitCode: code}, nil
}

// StopAll stops every host process, for the runtime's own shutdown.
func (r *Runtime) StopAll(grace time.Duration) {
	r.mu.Lock()
	var procs []*hostProcess
	for _, c := range r.containers {
		if c.process != nil {
			procs = append(procs, c.process)
		}
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(grace) })
	}
	wg.Wait()
}
