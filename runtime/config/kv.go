package config

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"

	"github.com/qrun-dev/qrun/engines"
)

// KVStore is a `kv "name"` block: a key-value store living in an engine,
// which consumers granted it (a consumer's kv list) use through the kv_*
// host functions (docs/state.md).
type KVStore struct {
	Name string
	// Engine names the engine block the store lives in; its type must hold
	// key-value stores (engines.Capabilities.KV).
	Engine string
	// MaxValueSize is the largest value accepted, in bytes. Default
	// engines.DefaultMaxValueSize (1 MiB); at most MaxKVValueSize.
	MaxValueSize int
	// Range is the block header.
	Range hcl.Range
}

// MaxKVValueSize bounds a store's max_value_size: a value travels whole
// through guest memory, the host and one engine write.
const MaxKVValueSize = 64 << 20

type rawKV struct {
	Name         string         `hcl:"name,label"`
	NameRange    hcl.Range      `hcl:"name,label_range"`
	Engine       *hcl.Attribute `hcl:"engine,optional"`
	MaxValueSize *hcl.Attribute `hcl:"max_value_size,optional"`
	DefRange     hcl.Range      `hcl:",def_range"`
}

// kvRefs are the ranges validateKV points at.
type kvRefs struct {
	engine *hcl.Attribute
	name   hcl.Range
}

// kvBlocks decodes the kv blocks into File.KV.
func (d *decoder) kvBlocks(blocks []*rawKV) {
	seen := map[string]hcl.Range{}
	d.kvRefs = map[string]kvRefs{}
	for _, rk := range blocks {
		if !d.checkName("kv store", rk.Name, rk.NameRange, seen) {
			continue
		}
		k := KVStore{Name: rk.Name, Range: rk.DefRange, MaxValueSize: engines.DefaultMaxValueSize}
		k.Engine = d.required(rk.Engine, rk.DefRange, "engine", "kv")
		if a := rk.MaxValueSize; a != nil {
			if n, ok := d.size(a); ok {
				if n < 1 || n > MaxKVValueSize {
					d.errorf(a.Expr.Range(), "Invalid max value size",
						"max_value_size must be between 1B and %s; got %d bytes.", "64MiB", n)
				} else {
					k.MaxValueSize = int(n)
				}
			}
		}
		d.kvRefs[k.Name] = kvRefs{engine: rk.Engine, name: rk.NameRange}
		d.file.KV = append(d.file.KV, k)
	}
}

// validateKV checks each store's engine: declared, and able to hold
// key-value stores when its capabilities are known before it opens.
func (d *decoder) validateKV(engineNames []string) {
	for _, k := range d.file.KV {
		refs := d.kvRefs[k.Name]
		if k.Engine == "" {
			continue
		}
		var typ string
		for _, e := range d.file.Engines {
			if e.Name == k.Engine {
				typ = e.Type
			}
		}
		if typ == "" {
			d.errorf(refs.engine.Expr.Range(), "Unknown engine",
				"Key-value store %q uses engine %q, which is not declared.%s Declare it with engine %q { type = ... }.",
				k.Name, k.Engine, didYouMean(k.Engine, engineNames), k.Engine)
			continue
		}
		if c, ok := d.caps[k.Engine]; ok && !c.KV {
			d.errorf(refs.engine.Expr.Range(), "Engine holds no key-value stores",
				"Key-value store %q uses engine %q (type %q), which cannot hold key-value stores. Use an engine of type memory, disk or postgres.",
				k.Name, k.Engine, typ)
			continue
		}
		if rule := d.nameRules[k.Engine]; rule != nil && validName(k.Name) {
			if err := rule(k.Name); err != nil {
				d.errorf(refs.name, "Invalid name", "Key-value store %q cannot live in engine %q: %v.", k.Name, k.Engine, err)
			}
		}
	}
}

// validateGrants checks that every store a consumer's kv list names is
// declared.
func (d *decoder) validateGrants(c *Consumer, refs consumerRefs) {
	if len(c.KV) == 0 {
		return
	}
	names := make([]string, 0, len(d.file.KV))
	for _, k := range d.file.KV {
		names = append(names, k.Name)
	}
	for j, name := range c.KV {
		if k, ok := d.file.KVStore(name); ok {
			c.KVStores = append(c.KVStores, *k)
		} else {
			d.errorf(refs.kv[j], "Unknown key-value store",
				"Consumer %q is granted key-value store %q, which is not declared.%s Declare it with kv %q { engine = ... }.",
				c.Name, name, didYouMean(name, names), name)
		}
	}
}

// KVStore returns the store of that name.
func (f *File) KVStore(name string) (*KVStore, bool) {
	for i := range f.KV {
		if f.KV[i].Name == name {
			return &f.KV[i], true
		}
	}
	return nil, false
}

// String is the store as logs name it.
func (k KVStore) String() string { return fmt.Sprintf("kv %q (engine %q)", k.Name, k.Engine) }
