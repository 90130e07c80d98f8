// Command module is the c-shared entry point of the votefilter dynamic module:
//
//	go build -buildmode=c-shared -o bin/libvotefilter.so ./filters/votefilter/module
//
// Envoy loads it through envoy.filters.http.dynamic_modules (module name "votefilter").
package main

import (
	_ "github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/abi"

	_ "github.com/tvvote/voting/filters/votefilter/envoymodule"
)

func main() {}
