package nodenet

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	api "github.com/knit-cni/knit/api/nmstate"
)

// setConditions makes exactly one of the given types True (with reason and
// message) and the rest False, keeping transition times of conditions that
// did not change, as kubernetes-nmstate's condition lists behave.
func setConditions(list []api.Condition, types []api.ConditionType, active api.ConditionType,
	reason api.ConditionReason, msg string, now time.Time) []api.Condition {
	old := map[api.ConditionType]api.Condition{}
	for _, c := range list {
		old[c.Type] = c
	}
	out := make([]api.Condition, 0, len(types))
	for _, t := range types {
		status := metav1.ConditionFalse
		if t == active {
			status = metav1.ConditionTrue
		}
		c := api.Condition{Type: t, Status: status, LastHeartbeatTime: metav1.NewTime(now),
			LastTransitionTime: metav1.NewTime(now)}
		if status == metav1.ConditionTrue {
			c.Reason, c.Message = reason, msg
		}
		if prev, ok := old[t]; ok && prev.Status == status {
			c.LastTransitionTime = prev.LastTransitionTime
		}
		out = append(out, c)
	}
	return out
}

// The condition types each kind carries.
var (
	policyTypes    = []api.ConditionType{api.Available, api.Degraded, api.Progressing}
	enactmentTypes = []api.ConditionType{api.Available, api.Failing, api.Progressing, api.Pending, api.Aborted}
)

// trueCondition returns the condition that is True, if any.
func trueCondition(list []api.Condition) (api.Condition, bool) {
	for _, c := range list {
		if c.Status == metav1.ConditionTrue {
			return c, true
		}
	}
	return api.Condition{}, false
}
