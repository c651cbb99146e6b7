package nodenet

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// maxUnavailable resolves a policy's maxUnavailable against the number of
// matching nodes: default 50%, percentages round up, never below one so a
// policy always makes progress.
func maxUnavailable(v *intstr.IntOrString, nodes int) (int, error) {
	def := intstr.FromString("50%")
	if v == nil {
		v = &def
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, nodes, true)
	if err != nil {
		return 0, fmt.Errorf("maxUnavailable: %w", err)
	}
	if n < 1 {
		n = 1
	}
	return n, nil
}
