// Package nmstate holds the nmstate.io API kinds, field for field
// compatible with kubernetes-nmstate: NodeNetworkConfigurationPolicy (v1),
// NodeNetworkState and NodeNetworkConfigurationEnactment (v1beta1). Both
// versions live in one Go package because knit serves each kind in one
// version only, as kubernetes-nmstate's storage versions are.
package nmstate

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Group is the API group of every nmstate kind.
const Group = "nmstate.io"

// State is an nmstate document kept verbatim (it is validated by the node
// agent, which reports errors on the enactment, as kubernetes-nmstate does).
type State struct {
	Raw json.RawMessage `json:"-"`
}

// MarshalJSON writes the document as it was given.
func (s State) MarshalJSON() ([]byte, error) {
	if len(s.Raw) == 0 {
		return []byte("{}"), nil
	}
	return s.Raw, nil
}

// UnmarshalJSON keeps the document verbatim.
func (s *State) UnmarshalJSON(b []byte) error {
	s.Raw = append(s.Raw[:0], b...)
	return nil
}

// NodeNetworkConfigurationPolicy (nncp) asks the nodes its selector matches
// to reach a desired network state.
type NodeNetworkConfigurationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NodeNetworkConfigurationPolicySpec   `json:"spec,omitempty"`
	Status            NodeNetworkConfigurationPolicyStatus `json:"status,omitempty"`
}

// NodeNetworkConfigurationPolicySpec is the policy.
type NodeNetworkConfigurationPolicySpec struct {
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// MaxUnavailable is how many nodes (or what percentage) may be
	// configuring at once; default "50%".
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
	DesiredState   State               `json:"desiredState,omitempty"`
	Capture        map[string]string   `json:"capture,omitempty"`
}

// NodeNetworkConfigurationPolicyStatus aggregates the enactments.
type NodeNetworkConfigurationPolicyStatus struct {
	Conditions                     []Condition  `json:"conditions,omitempty"`
	UnavailableNodeCount           int          `json:"unavailableNodeCount,omitempty"`
	LastUnavailableNodeCountUpdate *metav1.Time `json:"lastUnavailableNodeCountUpdate,omitempty"`
}

// NodeNetworkConfigurationPolicyList is a list of policies.
type NodeNetworkConfigurationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeNetworkConfigurationPolicy `json:"items"`
}

// NodeNetworkState (nns) reports one node's current network state.
type NodeNetworkState struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Status            NodeNetworkStateStatus `json:"status,omitempty"`
}

// NodeNetworkStateStatus is the reported state.
type NodeNetworkStateStatus struct {
	CurrentState             State       `json:"currentState,omitempty"`
	LastSuccessfulUpdateTime metav1.Time `json:"lastSuccessfulUpdateTime,omitempty"`
	Conditions               []Condition `json:"conditions,omitempty"`
	HandlerNmstateVersion    string      `json:"handlerNmstateVersion,omitempty"`
}

// NodeNetworkStateList is a list of node states.
type NodeNetworkStateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeNetworkState `json:"items"`
}

// NodeNetworkConfigurationEnactment (nnce, named <node>.<policy>) is one
// policy on one node.
type NodeNetworkConfigurationEnactment struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Status            NodeNetworkConfigurationEnactmentStatus `json:"status,omitempty"`
}

// NodeNetworkConfigurationEnactmentStatus is the enactment's progress.
type NodeNetworkConfigurationEnactmentStatus struct {
	DesiredState     State       `json:"desiredState,omitempty"`
	PolicyGeneration int64       `json:"policyGeneration,omitempty"`
	Conditions       []Condition `json:"conditions,omitempty"`
}

// NodeNetworkConfigurationEnactmentList is a list of enactments.
type NodeNetworkConfigurationEnactmentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeNetworkConfigurationEnactment `json:"items"`
}

// Condition is kubernetes-nmstate's condition shape.
type Condition struct {
	Type               ConditionType          `json:"type"`
	Status             metav1.ConditionStatus `json:"status"`
	Reason             ConditionReason        `json:"reason,omitempty"`
	Message            string                 `json:"message,omitempty"`
	LastHeartbeatTime  metav1.Time            `json:"lastHeartbeatTime,omitempty"`
	LastTransitionTime metav1.Time            `json:"lastTransitionTime,omitempty"`
}

// ConditionType names a condition.
type ConditionType string

// ConditionReason says why.
type ConditionReason string

// Condition types of policies, enactments and node states.
const (
	Available   ConditionType = "Available"
	Degraded    ConditionType = "Degraded"
	Progressing ConditionType = "Progressing"
	Ignored     ConditionType = "Ignored"
	Failing     ConditionType = "Failing"
	Pending     ConditionType = "Pending"
	Aborted     ConditionType = "Aborted"
)

// Reasons, as kubernetes-nmstate spells them.
const (
	SuccessfullyConfigured     ConditionReason = "SuccessfullyConfigured"
	FailedToConfigure          ConditionReason = "FailedToConfigure"
	ConfigurationProgressing   ConditionReason = "ConfigurationProgressing"
	NoMatchingNode             ConditionReason = "NoMatchingNode"
	MaxUnavailableLimitReached ConditionReason = "MaxUnavailableLimitReached"
	ConfigurationAborted       ConditionReason = "ConfigurationAborted"
)
