// Command fake-device-plugin stands in for NVIDIA's device plugin on the test cluster's real
// node: one kubelet device-plugin server (API v1beta1) per resource (nvidia.com/gpu and each
// MIG profile, as NVIDIA's "mixed" MIG strategy advertises them), listing the node's fake
// GPUs by UUID, always healthy. Allocate answers as NVIDIA's plugin does with its default
// "envvar" device-list strategy (NVIDIA_VISIBLE_DEVICES=<UUIDs>), plus the fake NVML's
// mount and variables (package fakegpu says why).
//
// Not done: health checks, GetPreferredAllocation, and re-registering after a kubelet
// restart (the kubelet of the tests runs for the node's whole life).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"whisperfleet.local/tests/cluster/gpuplugins/fakegpu"
)

type server struct {
	pluginapi.UnimplementedDevicePluginServer
	node     *fakegpu.Node
	resource string
	stop     <-chan struct{}
}

func (s *server) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (s *server) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	var devices []*pluginapi.Device
	for _, unit := range s.node.Units {
		if unit.Resource == s.resource {
			devices = append(devices, &pluginapi.Device{ID: unit.ID, Health: pluginapi.Healthy})
		}
	}
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devices}); err != nil {
		return err
	}
	select { // the list never changes: hold the stream open until either side stops
	case <-s.stop:
	case <-stream.Context().Done():
	}
	return nil
}

func (s *server) Allocate(_ context.Context, request *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	response := &pluginapi.AllocateResponse{}
	for _, container := range request.ContainerRequests {
		var units []fakegpu.Unit
		for _, id := range container.DevicesIds {
			unit, ok := s.node.ByID(id)
			if !ok || unit.Resource != s.resource {
				return nil, fmt.Errorf("unknown %s device %q", s.resource, id)
			}
			units = append(units, unit)
		}
		edits, err := s.node.EditsFor(units)
		if err != nil {
			return nil, err
		}
		klog.InfoS("allocated", "resource", s.resource, "devices", container.DevicesIds)
		response.ContainerResponses = append(response.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: edits.Env,
			Mounts: []*pluginapi.Mount{{
				ContainerPath: edits.ContainerPath, HostPath: edits.HostPath, ReadOnly: true,
			}},
		})
	}
	return response, nil
}

func (s *server) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// serve listens on <plugin dir>/<socket> and registers the resource with the kubelet.
func serve(node *fakegpu.Node, resource, pluginDir string, stop <-chan struct{}) (*grpc.Server, error) {
	socket := "whisperfleet-" + strings.NewReplacer("/", "-", ".", "-").Replace(resource) + ".sock"
	path := filepath.Join(pluginDir, socket)
	kubelet := filepath.Join(pluginDir, filepath.Base(pluginapi.KubeletSocket))
	// The kubelet empties this folder when its device manager starts: listen only after
	// its own socket is there, as NVIDIA's plugin does.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(kubelet); err == nil {
			break
		} else if time.Now().After(deadline) {
			return nil, fmt.Errorf("the kubelet's socket %s: %w", kubelet, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = os.Remove(path)
	listener, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	grpcServer := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(grpcServer, &server{node: node, resource: resource, stop: stop})
	go func() {
		if err := grpcServer.Serve(listener); err != nil {
			klog.ErrorS(err, "device plugin server stopped", "resource", resource)
		}
	}()
	// The kubelet may still be starting: retry for a while, as a DaemonSet pod would restart.
	for {
		err = register(kubelet, socket, resource)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		grpcServer.Stop()
		return nil, fmt.Errorf("register %s with the kubelet at %s: %w", resource, kubelet, err)
	}
	klog.InfoS("registered", "resource", resource, "socket", path)
	return grpcServer, nil
}

func register(kubeletSocket, endpoint, resource string) error {
	connection, err := grpc.NewClient("unix://"+kubeletSocket,
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer connection.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(connection).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: endpoint, ResourceName: resource,
		Options: &pluginapi.DevicePluginOptions{},
	})
	return err
}

func main() {
	config := flag.String("config", "", "the node's fake GPUs (JSON, see package fakegpu)")
	pluginDir := flag.String("plugin-dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin folder")
	klog.InitFlags(nil)
	flag.Parse()
	node, err := fakegpu.Load(*config)
	if err != nil {
		klog.ErrorS(err, "cannot read the configuration")
		os.Exit(1)
	}
	stop := make(chan struct{})
	var servers []*grpc.Server
	for _, resource := range node.Resources() {
		grpcServer, err := serve(node, resource, *pluginDir, stop)
		if err != nil {
			klog.ErrorS(err, "cannot serve", "resource", resource)
			os.Exit(1)
		}
		servers = append(servers, grpcServer)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
	close(stop)
	for _, grpcServer := range servers {
		grpcServer.Stop()
	}
}
