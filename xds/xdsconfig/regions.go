package xdsconfig

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/edgesettings"
)

// RegionStores are the admission store and vote queue of every region of a multi-region fleet,
// XDS_REGION_STORES as a JSON list, each entry with the fields of the filter config's redis and
// sqs objects:
//
//	[{"name":"eu-west-1","redis":{"addr":"eu.cache:6379","cluster":true,"tls":true,"waitReplicas":1},
//	  "sqs":{"queueUrl":"https://sqs.eu-west-1.amazonaws.com/123/votes","region":"eu-west-1"}},
//	 {"name":"us-east-1", ...}]
//
// Every edge gets its own region's store and queue and the others' as peers: a viewer's vote is
// decided in the viewer's home region's store (filters/votefilter/homeregion). An Envoy of a
// region not listed gets no config. The list must not change while an election is open, since
// the homes are computed from the region names.
type RegionStores []edgeconfig.RegionStore

// ParseRegionStores reads XDS_REGION_STORES.
func ParseRegionStores(v string) (RegionStores, error) {
	var r RegionStores
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("not a JSON list of {name, redis, sqs}: %v", err)
	}
	return r, nil
}

// MarshalText is the variable's value, for a child process's environment.
func (r RegionStores) MarshalText() ([]byte, error) {
	if len(r) == 0 {
		return nil, nil
	}
	var b bytes.Buffer
	err := json.NewEncoder(&b).Encode([]edgeconfig.RegionStore(r))
	return bytes.TrimSpace(b.Bytes()), err
}

// Of returns the store of region, if listed.
func (r RegionStores) Of(region string) (edgeconfig.RegionStore, bool) {
	for _, s := range r {
		if s.Name == region {
			return s, true
		}
	}
	return edgeconfig.RegionStore{}, false
}

func (r RegionStores) validate() []error {
	var errs []error
	seen := map[string]bool{}
	for i, s := range r {
		at := fmt.Sprintf("XDS_REGION_STORES[%d]", i)
		if !edgesettings.ValidScope(s.Name) || s.Name == edgesettings.Global {
			errs = append(errs, fmt.Errorf("%s.name %q must be a region name", at, s.Name))
		}
		if seen[s.Name] {
			errs = append(errs, fmt.Errorf("%s.name %q appears twice", at, s.Name))
		}
		seen[s.Name] = true
		seeds := []string{s.Redis.Addr}
		if s.Redis.Cluster {
			seeds = strings.Split(s.Redis.Addr, ",")
		}
		for _, seed := range seeds {
			if _, port, err := net.SplitHostPort(strings.TrimSpace(seed)); err != nil || port == "" {
				errs = append(errs, fmt.Errorf("%s.redis.addr %q must be host:port (comma-separated seeds with cluster)", at, s.Redis.Addr))
				break
			}
		}
		if s.SQS.QueueURL == "" || s.SQS.Region == "" {
			errs = append(errs, fmt.Errorf("%s.sqs needs queueUrl and region", at))
		}
	}
	return errs
}
