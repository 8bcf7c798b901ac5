package keytunnel_test

import (
	"testing"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestMain fails the package when goroutines of this module outlive the
// tests.
func TestMain(m *testing.M) { proctest.MainNoLeaks(m) }
