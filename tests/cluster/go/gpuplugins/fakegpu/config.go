// Package fakegpu holds what the two stand-in GPU plugins of the test cluster's real node
// share: the node's fake GPUs (read from a JSON file that tests/cluster/real_node writes from
// the same NodeSpec every other view of the fake GPUs comes from), and what a container that
// was given some of them receives. NVIDIA's stack gives a container its GPUs through
// NVIDIA_VISIBLE_DEVICES, which the NVIDIA container toolkit turns into device nodes and an
// injected libnvidia-ml. There is no GPU and no toolkit here, so the stand-in for that
// injection is the fake NVML (tests/fakes/pynvml): a folder mounted read-only into the
// container and put on PYTHONPATH, and WHISPERFLEET_FAKE_NVML listing only the devices the
// container was given, as the real NVML inside such a container lists only those.
package fakegpu

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Unit is one allocatable device: a whole GPU or one MIG instance.
type Unit struct {
	// Resource is the extended resource the device plugin advertises it under.
	Resource string `json:"resource"`
	// ID is the device ID the kubelet sees: the GPU's or the MIG instance's UUID.
	ID string `json:"id"`
	// DRADevice is its device name in the node's ResourceSlice.
	DRADevice string `json:"draDevice"`
	// Parent is the UUID of the physical GPU (itself for a whole GPU).
	Parent string `json:"parent"`
	// NVML is the device as the fake NVML describes it (tests/fakes/README.md); for a MIG
	// instance, its parent GPU holding only this instance.
	NVML map[string]any `json:"nvml"`
}

// Node is the whole configuration file.
type Node struct {
	NodeName string `json:"nodeName"`
	// DRADriver is the DRA driver name (gpu.nvidia.com, as NVIDIA's DRA driver).
	DRADriver string `json:"draDriver"`
	// DRADevices are the ResourceSlice devices (resource.k8s.io/v1 Device objects).
	DRADevices json.RawMessage `json:"draDevices"`
	// HostFakeNVML is the host folder that holds the fake `pynvml` package.
	HostFakeNVML string `json:"hostFakeNvml"`
	// ContainerFakeNVML is where that folder appears inside containers.
	ContainerFakeNVML string `json:"containerFakeNvml"`
	// Env is added for every allocation (the GPU-on-CPU test switch).
	Env   map[string]string `json:"env"`
	Units []Unit            `json:"units"`
}

// Load reads the configuration file.
func Load(path string) (*Node, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var node Node
	if err := json.Unmarshal(data, &node); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &node, nil
}

// Resources lists the resource names in the order they first appear.
func (n *Node) Resources() []string {
	var names []string
	seen := map[string]bool{}
	for _, unit := range n.Units {
		if !seen[unit.Resource] {
			seen[unit.Resource] = true
			names = append(names, unit.Resource)
		}
	}
	return names
}

// ByID finds a unit by its device ID.
func (n *Node) ByID(id string) (Unit, bool) {
	for _, unit := range n.Units {
		if unit.ID == id {
			return unit, true
		}
	}
	return Unit{}, false
}

// ByDRADevice finds a unit by its ResourceSlice device name.
func (n *Node) ByDRADevice(name string) (Unit, bool) {
	for _, unit := range n.Units {
		if unit.DRADevice == name {
			return unit, true
		}
	}
	return Unit{}, false
}

// Edits is what a container given some units receives.
type Edits struct {
	Env map[string]string
	// Mount is the fake NVML folder: host path -> container path, read-only.
	HostPath, ContainerPath string
}

// EnvList is Env as sorted KEY=VALUE strings (the form CDI wants).
func (e Edits) EnvList() []string {
	list := make([]string, 0, len(e.Env))
	for key, value := range e.Env {
		list = append(list, key+"="+value)
	}
	sort.Strings(list)
	return list
}

// EditsFor builds the environment and mount for a container given `units`, in order.
func (n *Node) EditsFor(units []Unit) (Edits, error) {
	ids := make([]string, 0, len(units))
	var visible []map[string]any
	parentAt := map[string]int{}
	for _, unit := range units {
		ids = append(ids, unit.ID)
		if unit.Parent == unit.ID {
			visible = append(visible, unit.NVML)
			continue
		}
		// MIG instances of one GPU appear under one parent, as NVML lists them.
		if at, ok := parentAt[unit.Parent]; ok {
			merged := visible[at]
			instances, _ := merged["mig"].([]any)
			extra, _ := unit.NVML["mig"].([]any)
			merged["mig"] = append(append([]any{}, instances...), extra...)
			continue
		}
		copied := map[string]any{}
		for key, value := range unit.NVML {
			copied[key] = value
		}
		parentAt[unit.Parent] = len(visible)
		visible = append(visible, copied)
	}
	nvml, err := json.Marshal(visible)
	if err != nil {
		return Edits{}, err
	}
	env := map[string]string{
		"NVIDIA_VISIBLE_DEVICES": strings.Join(ids, ","),
		"WHISPERFLEET_FAKE_NVML": string(nvml),
		"PYTHONPATH":             n.ContainerFakeNVML,
	}
	for key, value := range n.Env {
		env[key] = value
	}
	return Edits{Env: env, HostPath: n.HostFakeNVML, ContainerPath: n.ContainerFakeNVML}, nil
}
