package nodenet

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	api "github.com/knit-cni/knit/api/nmstate"
)

// takeSlot counts this node in the policy's unavailableNodeCount unless
// maxUnavailable nodes already are. The status update's resourceVersion
// makes concurrent nodes take slots one at a time.
func (a *Agent) takeSlot(ctx context.Context, policy string) (bool, error) {
	got := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var p api.NodeNetworkConfigurationPolicy
		if err := a.APIReader.Get(ctx, types.NamespacedName{Name: policy}, &p); err != nil {
			return err
		}
		nodes, err := a.matchingNodes(ctx, &p)
		if err != nil {
			return err
		}
		limit, err := maxUnavailable(p.Spec.MaxUnavailable, nodes)
		if err != nil {
			return err
		}
		if p.Status.UnavailableNodeCount >= limit {
			got = false
			return nil
		}
		p.Status.UnavailableNodeCount++
		now := metav1.NewTime(a.now())
		p.Status.LastUnavailableNodeCountUpdate = &now
		got = true
		return a.Client.Status().Update(ctx, &p)
	})
	return got, err
}

func (a *Agent) releaseSlot(ctx context.Context, policy string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var p api.NodeNetworkConfigurationPolicy
		if err := a.APIReader.Get(ctx, types.NamespacedName{Name: policy}, &p); err != nil {
			return client.IgnoreNotFound(err)
		}
		if p.Status.UnavailableNodeCount > 0 {
			p.Status.UnavailableNodeCount--
		}
		now := metav1.NewTime(a.now())
		p.Status.LastUnavailableNodeCountUpdate = &now
		return a.Client.Status().Update(ctx, &p)
	})
}

func (a *Agent) matchingNodes(ctx context.Context, p *api.NodeNetworkConfigurationPolicy) (int, error) {
	var nodes corev1.NodeList
	sel := labels.SelectorFromSet(p.Spec.NodeSelector)
	if err := a.Client.List(ctx, &nodes, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return 0, fmt.Errorf("listing nodes: %w", err)
	}
	return len(nodes.Items), nil
}

// updatePolicyStatus recomputes the policy's conditions from every node's
// enactment, read from the API server so that the last node to finish sees
// all the others' results.
func (a *Agent) updatePolicyStatus(ctx context.Context, policy string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var p api.NodeNetworkConfigurationPolicy
		if err := a.APIReader.Get(ctx, types.NamespacedName{Name: policy}, &p); err != nil {
			return client.IgnoreNotFound(err)
		}
		var list api.NodeNetworkConfigurationEnactmentList
		if err := a.APIReader.List(ctx, &list, client.MatchingLabels{LabelPolicy: policy}); err != nil {
			return err
		}
		nodes, err := a.matchingNodes(ctx, &p)
		if err != nil {
			return err
		}
		t, reason, msg := aggregate(&p, list.Items, nodes)
		p.Status.Conditions = setConditions(p.Status.Conditions, policyTypes, t, reason, msg, a.now())
		return a.Client.Status().Update(ctx, &p)
	})
}

// aggregate turns enactments into the policy's one true condition.
func aggregate(p *api.NodeNetworkConfigurationPolicy, es []api.NodeNetworkConfigurationEnactment, nodes int) (api.ConditionType, api.ConditionReason, string) {
	if nodes == 0 {
		return api.Available, api.NoMatchingNode, "policy does not match any node"
	}
	var available, failing, progressing int
	for _, e := range es {
		c, ok := trueCondition(e.Status.Conditions)
		if !ok || e.Status.PolicyGeneration != p.Generation {
			progressing++
			continue
		}
		switch c.Type {
		case api.Available:
			available++
		case api.Failing, api.Aborted:
			failing++
		default:
			progressing++
		}
	}
	switch {
	case failing > 0 && failing+available >= nodes:
		return api.Degraded, api.FailedToConfigure, fmt.Sprintf("%d/%d nodes failed to configure", failing, nodes)
	case available >= nodes:
		return api.Available, api.SuccessfullyConfigured, fmt.Sprintf("%d/%d nodes successfully configured", available, nodes)
	}
	return api.Progressing, api.ConfigurationProgressing, fmt.Sprintf("policy is progressing %d/%d nodes finished", available+failing, nodes)
}
