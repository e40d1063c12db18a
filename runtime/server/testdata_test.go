package server_test

import (
	"testing"

	"github.com/qrun-dev/qrun/internal/testenv"
)

// TestReloadModulesMatchWat keeps the committed test modules of the reload
// and shutdown tests in step with their WAT sources.
func TestReloadModulesMatchWat(t *testing.T) {
	t.Parallel()
	testenv.CheckWatSources(t, "testdata", "go generate ./runtime/server/")
}
