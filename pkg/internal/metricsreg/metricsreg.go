// Package metricsreg registers the collectors of a component on the
// process's registry: one place for the rule that a second component of a
// kind on one Registerer is an error that says so.
package metricsreg

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers cs on reg in order, stopping at the first failure.
// component names the package in the error ("hostexec").
func Register(reg prometheus.Registerer, component string, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				err = fmt.Errorf("already registered (one %s per Registerer): %w", component, err)
			}
			return fmt.Errorf("%s: metrics: %w", component, err)
		}
	}
	return nil
}
