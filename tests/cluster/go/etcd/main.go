// Command etcd is the etcd server, built from its Go module for the tests' local
// control plane (go.etcd.io/etcd/server/v3 has replace directives of its own, so it
// cannot be a `tool` of another module; this wrapper is its main module instead).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
