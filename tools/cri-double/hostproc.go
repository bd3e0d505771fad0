package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// CommandMap maps the first element of a container's command to the host argv that plays it
// (e.g. "compute-domain-daemon" -> ["/usr/bin/python3", "-m", "computedomain.daemon"]).
type CommandMap map[string][]string

// hostArgv is the host command for a container or probe command, or nil when the map has none.
func (m CommandMap) hostArgv(command []string) []string {
	if len(command) == 0 {
		return nil
	}
	target, ok := m[command[0]]
	if !ok || len(target) == 0 {
		return nil
	}
	return append(slices.Clone(target), command[1:]...)
}

// hostEnv is the environment of a host process standing in for a container.
//
// The process shares the host's file system, so paths a container would see through bind mounts
// are rewritten: an environment value naming a mounted container path (or a path below it) names
// the host path instead. All mounts are also passed as JSON in CRI_DOUBLE_MOUNTS. The Kubernetes
// service variables point at the real API server, since no kube-proxy translates the service IP.
func hostEnv(env []string, mounts []Mount, apiServer string, record string) []string {
	out := make([]string, 0, len(env)+4)
	for _, kv := range env {
		key, value, _ := strings.Cut(kv, "=")
		if apiServer != "" && (strings.HasPrefix(key, "KUBERNETES_SERVICE_") || strings.HasPrefix(key, "KUBERNETES_PORT")) {
			continue
		}
		out = append(out, key+"="+hostPath(value, mounts))
	}
	if apiServer != "" {
		if ap, err := netip.ParseAddrPort(apiServer); err == nil {
			host, port := ap.Addr().String(), fmt.Sprint(ap.Port())
			out = append(out, "KUBERNETES_SERVICE_HOST="+host, "KUBERNETES_SERVICE_PORT="+port,
				"KUBERNETES_SERVICE_PORT_HTTPS="+port, "KUBERNETES_PORT=tcp://"+apiServer)
		}
	}
	if !slices.ContainsFunc(out, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		out = append(out, "PATH="+os.Getenv("PATH"))
	}
	data, _ := json.Marshal(mounts)
	return append(out, "CRI_DOUBLE_MOUNTS="+string(data), "CRI_DOUBLE_RECORD="+record)
}

// hostPath rewrites a container path to the host path of the innermost mount that holds it.
func hostPath(value string, mounts []Mount) string {
	best := -1
	for i, m := range mounts {
		dest := strings.TrimSuffix(m.ContainerPath, "/")
		if dest == "" || m.HostPath == "" {
			continue
		}
		if value == dest || strings.HasPrefix(value, dest+"/") {
			if best < 0 || len(dest) > len(strings.TrimSuffix(mounts[best].ContainerPath, "/")) {
				best = i
			}
		}
	}
	if best < 0 {
		return value
	}
	return mounts[best].HostPath + strings.TrimPrefix(value, strings.TrimSuffix(mounts[best].ContainerPath, "/"))
}

// hostProcess is a running host process that plays a container.
type hostProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
	// exitCode is valid once done is closed.
	exitCode int32
}

func startProcess(argv, env []string, dir, logFile string) (*hostProcess, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	out, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = env, dir, out, out
	// Own process group: stopping the container stops what it spawned. Dying with the runtime
	// keeps a crashed test bed from leaving processes behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	p := &hostProcess{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		out.Close()
		p.exitCode = exitCode(cmd.ProcessState)
		close(p.done)
	}()
	return p, nil
}

// exitCode reports a death by signal as a shell and container runtimes do: 128 + signal.
func exitCode(state *os.ProcessState) int32 {
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return int32(128 + ws.Signal())
	}
	return int32(state.ExitCode())
}

// stop sends SIGTERM to the process group, then SIGKILL once `grace` has passed.
func (p *hostProcess) stop(grace time.Duration) {
	pgid := -p.cmd.Process.Pid
	if grace > 0 {
		_ = syscall.Kill(pgid, syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-time.After(grace):
		}
	}
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	<-p.done
}

// runProbe runs an exec probe's host command and returns its output and exit code, as ExecSync must.
func runProbe(ctx context.Context, argv, env []string, dir string, timeout time.Duration) ([]byte, []byte, int32, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &stdout, &stderr
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		cmd.Dir = dir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return stdout.Bytes(), stderr.Bytes(), 0, nil
	case ctx.Err() != nil:
		return nil, nil, 0, fmt.Errorf("command %q timed out after %s", argv, timeout)
	case errors.As(err, &exitErr):
		return stdout.Bytes(), stderr.Bytes(), exitCode(exitErr.ProcessState), nil
	default:
		// A command that cannot start is "not found" to a shell; a probe simply fails.
		return nil, []byte(err.Error()), 127, nil
	}
}

func workDir(stateDir, containerID string) string {
	return filepath.Join(stateDir, "work", containerID)
}
