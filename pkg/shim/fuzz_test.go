package shim

import (
	"encoding/json"
	"testing"
)

// FuzzParseConf: the shim's config parser never panics, and an accepted
// config always has a socket and a cache dir to fall back on.
func FuzzParseConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"knit","socket":"/s","cacheDir":"/c"}`))
	f.Add([]byte(`{"cniVersion":"0.3.1","runtimeConfig":{"portMappings":[{"hostPort":1}]}}`))
	f.Add([]byte(`{"cniVersion":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConf(data)
		if err != nil {
			return
		}
		if c.Socket == "" || c.CacheDir == "" {
			t.Fatal("defaults missing")
		}
		var r Request
		_ = json.Unmarshal(data, &r)
	})
}
