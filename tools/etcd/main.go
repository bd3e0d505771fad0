// Command etcd is upstream etcd's server entry point, wrapped so it can be built from the Go module
// proxy: etcd's own server module carries replace directives that forbid `go install`.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
