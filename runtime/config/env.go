package config

import (
	"errors"
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// envMissingError is the env() failure for an unset variable without a
// default. It is a distinct type so the generic "Error in function call"
// diagnostic can be turned into one that says what to do.
type envMissingError struct{ name string }

// Error names the missing variable.
func (e *envMissingError) Error() string {
	return fmt.Sprintf("environment variable %q is not set and no default was given", e.name)
}

// newEvalContext builds a fresh context per use: the function closes over the
// caller's lookup, and nothing is shared between parses.
func newEvalContext(lookup func(string) (string, bool)) *hcl.EvalContext {
	return &hcl.EvalContext{
		Functions: map[string]function.Function{"env": envFunc(lookup)},
	}
}

// envFunc is env(name) / env(name, default). Secrets such as DSNs and tokens
// come from the environment so the config file itself can be committed.
func envFunc(lookup func(string) (string, bool)) function.Function {
	return function.New(&function.Spec{
		Description: "Returns the value of an environment variable, or the default when it is unset.",
		Params:      []function.Parameter{{Name: "name", Type: cty.String}},
		VarParam:    &function.Parameter{Name: "default", Type: cty.String},
		Type:        function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			if len(args) > 2 {
				return cty.NilVal, function.NewArgErrorf(2, "env takes a variable name and at most one default")
			}
			name := args[0].AsString()
			if name == "" {
				return cty.NilVal, function.NewArgErrorf(0, "the variable name must not be empty")
			}
			if v, ok := lookup(name); ok {
				return cty.StringVal(v), nil
			}
			if len(args) == 2 {
				return args[1], nil
			}
			return cty.NilVal, &envMissingError{name: name}
		},
	})
}

// rewriteEnvDiags replaces HCL's generic function-call diagnostic for an unset
// variable, including those raised inside engine bodies, with one whose
// summary is stable and whose detail says how to fix it.
func rewriteEnvDiags(diags hcl.Diagnostics) hcl.Diagnostics {
	for i, d := range diags {
		extra, ok := hcl.DiagnosticExtra[hclsyntax.FunctionCallDiagExtra](d)
		if !ok || extra.CalledFunctionName() != "env" {
			continue
		}
		var missing *envMissingError
		if !errors.As(extra.FunctionCallError(), &missing) {
			continue
		}
		nd := *d
		nd.Summary = "Missing environment variable"
		nd.Detail = fmt.Sprintf("Environment variable %q is not set. Set it, or give a default: env(%q, \"value\").", missing.name, missing.name)
		diags[i] = &nd
	}
	return diags
}
