package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"tags.cncf.io/container-device-interface/pkg/cdi"
)

// DeviceNode is one device node a container would receive.
type DeviceNode struct {
	Path     string `json:"path"`
	Type     string `json:"type"`
	Major    int64  `json:"major"`
	Minor    int64  `json:"minor"`
	FileMode string `json:"fileMode,omitempty"`
}

// Mount is one bind mount a container would receive.
type Mount struct {
	ContainerPath string   `json:"containerPath"`
	HostPath      string   `json:"hostPath"`
	Type          string   `json:"type,omitempty"`
	Options       []string `json:"options,omitempty"`
	ReadOnly      bool     `json:"readOnly,omitempty"`
}

// Resolution is what the CDI edits of a container's devices add to it.
type Resolution struct {
	DeviceNodes []DeviceNode `json:"deviceNodes"`
	// Env is the container's whole environment after the edits, in OCI "K=V" form.
	Env []string `json:"env"`
	// AddedEnv holds the entries the edits added or replaced.
	AddedEnv []string `json:"addedEnv"`
	Mounts   []Mount  `json:"mounts"`
	Hooks    int      `json:"hooks"`
}

// Record is what the runtime writes per created container, for tests to read.
type Record struct {
	ID           string     `json:"id"`
	SandboxID    string     `json:"sandboxId"`
	PodNamespace string     `json:"podNamespace"`
	PodName      string     `json:"podName"`
	PodUID       string     `json:"podUid"`
	Container    string     `json:"container"`
	Attempt      uint32     `json:"attempt"`
	Image        string     `json:"image"`
	Command      []string   `json:"command"`
	Args         []string   `json:"args"`
	Env          []string   `json:"env"`
	CDIDevices   []string   `json:"cdiDevices"`
	CDI          Resolution `json:"cdi"`
	Mounts       []Mount    `json:"mounts"`
	// HostCommand is the host process that plays the container, when the command map names one.
	HostCommand []string `json:"hostCommand,omitempty"`
	LogFile     string   `json:"logFile,omitempty"`
}

// requestedDevices lists the CDI devices a container asks for, the way containerd's CRI plugin
// collects them: the CRI field first, then the CDI annotations, each device once.
func requestedDevices(config *runtimeapi.ContainerConfig) ([]string, error) {
	var devices []string
	for _, d := range config.GetCDIDevices() {
		if !slices.Contains(devices, d.GetName()) {
			devices = append(devices, d.GetName())
		}
	}
	_, fromAnnotations, err := cdi.ParseAnnotations(config.GetAnnotations())
	if err != nil {
		return nil, fmt.Errorf("failed to parse CDI device annotations: %w", err)
	}
	for _, d := range fromAnnotations {
		if !slices.Contains(devices, d) {
			devices = append(devices, d)
		}
	}
	return devices, nil
}

// resolve applies the CDI edits of `devices` to a minimal OCI spec holding `env`, with a fresh
// read of the spec dirs, so a spec written just before CreateContainer is seen (containerd
// refreshes its registry the same way and also treats refresh errors as warnings).
func resolve(specDirs []string, devices []string, env []string) (Resolution, error) {
	res := Resolution{DeviceNodes: []DeviceNode{}, Env: slices.Clone(env), AddedEnv: []string{}, Mounts: []Mount{}}
	if len(devices) == 0 {
		return res, nil
	}
	cache, _ := cdi.NewCache(cdi.WithSpecDirs(specDirs...), cdi.WithAutoRefresh(false))
	spec := &oci.Spec{Process: &oci.Process{Env: slices.Clone(env)}, Linux: &oci.Linux{}}
	if _, err := cache.InjectDevices(spec, devices...); err != nil {
		return res, fmt.Errorf("CDI device injection failed: %w", err)
	}
	for _, d := range spec.Linux.Devices {
		node := DeviceNode{Path: d.Path, Type: d.Type, Major: d.Major, Minor: d.Minor}
		if d.FileMode != nil {
			node.FileMode = fmt.Sprintf("%#o", uint32(*d.FileMode))
		}
		res.DeviceNodes = append(res.DeviceNodes, node)
	}
	for _, m := range spec.Mounts {
		res.Mounts = append(res.Mounts, Mount{ContainerPath: m.Destination, HostPath: m.Source, Type: m.Type, Options: m.Options})
	}
	res.Env = spec.Process.Env
	for _, kv := range spec.Process.Env {
		if !slices.Contains(env, kv) {
			res.AddedEnv = append(res.AddedEnv, kv)
		}
	}
	if spec.Hooks != nil {
		res.Hooks = len(spec.Hooks.Prestart) + len(spec.Hooks.CreateRuntime) + len(spec.Hooks.CreateContainer) +
			len(spec.Hooks.StartContainer) + len(spec.Hooks.Poststart) + len(spec.Hooks.Poststop)
	}
	return res, nil
}

// ociEnv turns the CRI key/value list into OCI "K=V" entries, later duplicates winning as in a runtime.
func ociEnv(envs []*runtimeapi.KeyValue) []string {
	var out []string
	for _, kv := range envs {
		entry := kv.GetKey() + "=" + string(kv.GetValue())
		out = slices.DeleteFunc(out, func(e string) bool { return strings.HasPrefix(e, kv.GetKey()+"=") })
		out = append(out, entry)
	}
	return out
}

func criMounts(mounts []*runtimeapi.Mount) []Mount {
	out := []Mount{}
	for _, m := range mounts {
		out = append(out, Mount{ContainerPath: m.GetContainerPath(), HostPath: m.GetHostPath(), ReadOnly: m.GetReadonly()})
	}
	return out
}

// writeJSON replaces `path` atomically so a reader never sees half a record.
func writeJSON(path string, value any) error {
	data, err := json.MarshalIndent(value, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
