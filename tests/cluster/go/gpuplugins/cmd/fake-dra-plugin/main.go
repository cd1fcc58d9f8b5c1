// Command fake-dra-plugin stands in for NVIDIA's DRA kubelet plugin (driver gpu.nvidia.com)
// on the test cluster's real node, built on k8s.io/dynamic-resource-allocation/kubeletplugin:
// it publishes the node's fake GPUs as a ResourceSlice, and when the kubelet prepares an
// allocated ResourceClaim it writes one CDI spec for the claim whose edits give the
// container the same variables and fake NVML mount as the device plugin's Allocate does
// (package fakegpu). containerd 2 reads the CDI specs and applies them.
//
// Not done: device health, rolling updates, device metadata files.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2"
	cdi "tags.cncf.io/container-device-interface/specs-go"

	"whisperfleet.local/tests/cluster/gpuplugins/fakegpu"
)

// CDI kind of the claims' devices, as NVIDIA's DRA driver names its own.
const cdiVendor, cdiClass = "k8s.gpu.nvidia.com", "claim"

type plugin struct {
	node   *fakegpu.Node
	cdiDir string
	mutex  sync.Mutex
}

func (p *plugin) specPath(claim types.UID) string {
	return filepath.Join(p.cdiDir, fmt.Sprintf("%s-%s.json", cdiVendor, claim))
}

func (p *plugin) prepare(claim *resourceapi.ResourceClaim) ([]kubeletplugin.Device, error) {
	var units []fakegpu.Unit
	var results []resourceapi.DeviceRequestAllocationResult
	for _, result := range claim.Status.Allocation.Devices.Results {
		if result.Driver != p.node.DRADriver {
			continue
		}
		if result.Pool != p.node.NodeName {
			return nil, fmt.Errorf("device %s/%s is not in this node's pool", result.Pool, result.Device)
		}
		unit, ok := p.node.ByDRADevice(result.Device)
		if !ok {
			return nil, fmt.Errorf("no device %q on this node", result.Device)
		}
		units = append(units, unit)
		results = append(results, result)
	}
	if len(units) == 0 {
		return nil, nil
	}
	edits, err := p.node.EditsFor(units)
	if err != nil {
		return nil, err
	}
	name := string(claim.UID)
	spec := &cdi.Spec{
		Kind: cdiVendor + "/" + cdiClass,
		Devices: []cdi.Device{{Name: name, ContainerEdits: cdi.ContainerEdits{
			Env: edits.EnvList(),
			Mounts: []*cdi.Mount{{HostPath: edits.HostPath, ContainerPath: edits.ContainerPath,
				Options: []string{"ro", "rbind"}, Type: "bind"}},
		}}},
	}
	version, err := cdi.MinimumRequiredVersion(spec)
	if err != nil {
		return nil, err
	}
	spec.Version = version
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.specPath(claim.UID), data, 0o644); err != nil {
		return nil, err
	}
	// One CDI device holds the whole claim's edits (NVIDIA_VISIBLE_DEVICES lists every GPU
	// of the claim); it is attached to the claim's first device only, so it is applied once.
	devices := make([]kubeletplugin.Device, 0, len(results))
	for i, result := range results {
		device := kubeletplugin.Device{Requests: []string{result.Request}, PoolName: result.Pool,
			DeviceName: result.Device}
		if i == 0 {
			device.CDIDeviceIDs = []string{cdiVendor + "/" + cdiClass + "=" + name}
		}
		devices = append(devices, device)
	}
	klog.InfoS("prepared", "claim", klog.KObj(claim), "devices", len(devices))
	return devices, nil
}

func (p *plugin) PrepareResourceClaims(_ context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	p.mutex.Lock()
	defer p.mutex.Unlock()
	results := map[types.UID]kubeletplugin.PrepareResult{}
	for _, claim := range claims {
		devices, err := p.prepare(claim)
		results[claim.UID] = kubeletplugin.PrepareResult{Devices: devices, Err: err}
	}
	return results, nil
}

func (p *plugin) UnprepareResourceClaims(_ context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	p.mutex.Lock()
	defer p.mutex.Unlock()
	results := map[types.UID]error{}
	for _, claim := range claims {
		err := os.Remove(p.specPath(claim.UID))
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		results[claim.UID] = err
	}
	return results, nil
}

func (p *plugin) HandleError(ctx context.Context, err error, msg string) {
	klog.FromContext(ctx).Error(err, msg)
}

func (p *plugin) WatchHealthStatus(context.Context, chan<- kubeletplugin.DeviceHealthReport) error {
	return kubeletplugin.ErrHealthNotSupported
}

func run() error {
	config := flag.String("config", "", "the node's fake GPUs (JSON, see package fakegpu)")
	kubeconfig := flag.String("kubeconfig", "", "credentials for ResourceClaims and ResourceSlices")
	cdiDir := flag.String("cdi-dir", kubeletplugin.DefaultCDIDir, "where the container runtime reads CDI specs")
	klog.InitFlags(nil)
	flag.Parse()
	node, err := fakegpu.Load(*config)
	if err != nil {
		return err
	}
	restConfig, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	var devices []resourceapi.Device
	if err := json.Unmarshal(node.DRADevices, &devices); err != nil {
		return fmt.Errorf("draDevices: %w", err)
	}
	for _, dir := range []string{*cdiDir, filepath.Join(kubeletplugin.KubeletPluginsDir, node.DRADriver),
		kubeletplugin.KubeletRegistryDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	helper, err := kubeletplugin.Start(ctx, &plugin{node: node, cdiDir: *cdiDir},
		kubeletplugin.DriverName(node.DRADriver), kubeletplugin.NodeName(node.NodeName),
		kubeletplugin.KubeClient(client), kubeletplugin.HealthService(false))
	if err != nil {
		return err
	}
	defer helper.Stop()
	pool := resourceslice.Pool{Slices: []resourceslice.Slice{{Devices: devices}}}
	err = helper.PublishResources(ctx, resourceslice.DriverResources{
		Pools: map[string]resourceslice.Pool{node.NodeName: pool}})
	if err != nil {
		return err
	}
	klog.InfoS("publishing", "driver", node.DRADriver, "devices", len(devices))
	<-ctx.Done()
	return nil
}

func main() {
	if err := run(); err != nil {
		klog.ErrorS(err, "fake DRA plugin failed")
		os.Exit(1)
	}
}
