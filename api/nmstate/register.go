package nmstate

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The versions each kind is served in.
var (
	V1      = schema.GroupVersion{Group: Group, Version: "v1"}
	V1beta1 = schema.GroupVersion{Group: Group, Version: "v1beta1"}
)

// AddToScheme registers the kinds, each under its one served version.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(V1, &NodeNetworkConfigurationPolicy{}, &NodeNetworkConfigurationPolicyList{})
	s.AddKnownTypes(V1beta1, &NodeNetworkState{}, &NodeNetworkStateList{},
		&NodeNetworkConfigurationEnactment{}, &NodeNetworkConfigurationEnactmentList{})
	metav1.AddToGroupVersion(s, V1)
	metav1.AddToGroupVersion(s, V1beta1)
	return nil
}

// deepCopy copies through JSON. These objects are few and small (one per
// node or policy), so a generated deep copy would buy nothing but code.
func deepCopy[T any](in *T) *T {
	if in == nil {
		return nil
	}
	b, err := json.Marshal(in)
	if err != nil {
		panic("nmstate: deep copy: " + err.Error()) // cannot happen for these types
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		panic("nmstate: deep copy: " + err.Error())
	}
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *NodeNetworkConfigurationPolicy) DeepCopyObject() runtime.Object { return deepCopy(in) }

// DeepCopyObject implements runtime.Object.
func (in *NodeNetworkConfigurationPolicyList) DeepCopyObject() runtime.Object { return deepCopy(in) }

// DeepCopyObject implements runtime.Object.
func (in *NodeNetworkState) DeepCopyObject() runtime.Object { return deepCopy(in) }

// DeepCopyObject implements runtime.Object.
func (in *NodeNetworkStateList) DeepCopyObject() runtime.Object { return deepCopy(in) }

// DeepCopyObject implements runtime.Object.
func (in *NodeNetworkConfigurationEnactment) DeepCopyObject() runtime.Object { return deepCopy(in) }

// DeepCopyObject implements runtime.Object.
func (in *NodeNetworkConfigurationEnactmentList) DeepCopyObject() runtime.Object { return deepCopy(in) }
