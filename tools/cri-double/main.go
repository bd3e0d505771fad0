// Command cri-double is the container runtime of the test bed's real kubelets: the fake CRI
// runtime of k8s.io/cri-client, extended to report loopback pod IPs, resolve CDI devices with the
// CDI library containerd uses and record what each container would receive, and run the
// containers whose command is in a command map as host processes.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-client/pkg/util"
)

func main() {
	socket := flag.String("socket", "", "unix socket to serve the CRI runtime and image services on")
	state := flag.String("state-dir", "", "where container records (containers/*.json) and process logs (logs/) go")
	specDirs := flag.String("cdi-spec-dirs", "/etc/cdi,/var/run/cdi", "comma-separated CDI spec directories")
	commands := flag.String("command-map", "", `JSON file mapping a container command to a host argv, e.g. {"compute-domain-daemon": ["/usr/bin/python3", "-m", "computedomain.daemon"]}`)
	cidr := flag.String("pod-cidr", "127.1.0.0/16", "loopback prefix pod IPs are taken from")
	apiServer := flag.String("api-server", "", "host:port host processes get as KUBERNETES_SERVICE_HOST/PORT")
	flag.Parse()
	if *socket == "" || *state == "" {
		log.Fatal("--socket and --state-dir are required")
	}
	prefix, err := netip.ParsePrefix(*cidr)
	if err != nil {
		log.Fatalf("--pod-cidr: %v", err)
	}
	if _, err := podIP(prefix, 0); err != nil {
		log.Fatal(err)
	}
	cmap, err := loadCommandMap(*commands)
	if err != nil {
		log.Fatalf("--command-map: %v", err)
	}
	for _, d := range []string{"containers", "logs", "work"} {
		if err := os.MkdirAll(filepath.Join(*state, d), 0o755); err != nil {
			log.Fatal(err)
		}
	}
	rt := NewRuntime(Options{StateDir: *state, SpecDirs: splitList(*specDirs), Commands: cmap, PodCIDR: prefix, APIServer: *apiServer})

	server := grpc.NewServer(grpc.UnaryInterceptor(rt.forgetCalls))
	runtimeapi.RegisterRuntimeServiceServer(server, rt)
	runtimeapi.RegisterImageServiceServer(server, rt)
	listener, err := util.CreateListener("unix://" + *socket)
	if err != nil {
		log.Fatal(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		server.Stop()
	}()
	log.Printf("serving CRI on %s (pod CIDR %s, CDI spec dirs %s, %d mapped commands)", *socket, prefix, *specDirs, len(cmap))
	if err := server.Serve(listener); err != nil {
		log.Print(err)
	}
	rt.StopAll(10 * time.Second)
	_ = os.Remove(*socket)
}

// forgetCalls drops the fake's call log after each call: it exists for unit-test assertions and
// would otherwise grow for as long as the kubelet polls.
func (r *Runtime) forgetCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	rs := r.RuntimeService
	rs.Lock()
	rs.Called = rs.Called[:0]
	rs.Unlock()
	r.ImageService.Lock()
	r.ImageService.Called = r.ImageService.Called[:0]
	r.ImageService.Unlock()
	return resp, err
}

func loadCommandMap(path string) (CommandMap, error) {
	cmap := CommandMap{}
	if path == "" {
		return cmap, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &cmap); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cmap, nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
