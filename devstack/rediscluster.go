package devstack

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ClusterNodes is the size of the local Redis Cluster: three primaries, each with a replica,
// the smallest cluster in which a primary's death is repaired by its replica's promotion.
const ClusterNodes = 6

// clusterNodeTimeout is how long a primary may stay silent before the others mark it failed
// and its replica takes over. ElastiCache's default is 15 s; 2 s keeps the failover tests
// short while leaving the gossip room on a busy 2-core machine.
const clusterNodeTimeout = 2 * time.Second

// RedisCluster is a Redis Cluster on loopback (Debian's redis-server in cluster mode): the
// stand-in for ElastiCache in cluster mode, durable as it is, by replication. Node i is the
// fault API's component "redis-node-i".
type RedisCluster struct {
	Nodes []*Redis
}

// ComponentRedisNode names node i of the Redis Cluster in the fault API.
func ComponentRedisNode(i int) string { return "redis-node-" + strconv.Itoa(i) }

// StartRedisCluster starts ClusterNodes empty nodes on the given ports (0: a free one), joins
// them into one cluster with a replica per primary, and returns once every node sees every
// slot served.
func StartRedisCluster(ctx context.Context, ports []int) (_ *RedisCluster, err error) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, fmt.Errorf("redis-cli not found: run `make tools` first")
	}
	c := &RedisCluster{}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	for i := range ClusterNodes {
		port := 0
		if i < len(ports) {
			port = ports[i]
		}
		if port == 0 {
			if port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		// A cluster node is durable as ElastiCache's are: through its replica (the edge WAITs
		// for it), its own append-only file fsynced once a second rather than before every
		// reply, which would put two fsyncs into every WAIT.
		n, err := startRedis(ctx, port, ComponentRedisNode(i), "--appendfsync", "everysec",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(int(clusterNodeTimeout/time.Millisecond)))
		if err != nil {
			return nil, fmt.Errorf("redis cluster node %d: %w", i, err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	args := append([]string{"--cluster", "create"}, c.addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(cctx, cli, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %w: %s", err, out)
	}
	if err := c.WaitHealthy(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	if err := c.WaitReplicated(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// WaitReplicated returns once every primary has a replica online, its initial sync done:
// until then a WAIT for one replica times out, and a failover would lose what the primary took.
func (c *RedisCluster) WaitReplicated(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		primaries, err := c.Primaries(ctx)
		bad := ""
		if err != nil {
			bad = err.Error()
		}
		for _, i := range primaries {
			out, err := c.cli(ctx, c.Nodes[i].Addr, "info", "replication")
			if err != nil || !strings.Contains(out, "state=online") {
				bad = fmt.Sprintf("primary %d (%s) has no replica online", i, c.Nodes[i].Addr)
				break
			}
		}
		if bad == "" && len(primaries) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis cluster not replicated after %s: %s", timeout, bad)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *RedisCluster) addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// Seeds is what a cluster client is given: every node's address, comma-separated.
func (c *RedisCluster) Seeds() string { return strings.Join(c.addrs(), ",") }

// ClusterNode is one node as the cluster sees it (CLUSTER NODES).
type ClusterNode struct {
	Index   int    // position in Nodes
	ID      string // the node's cluster id
	Primary bool
	Failed  bool   // marked fail (or pfail) by the node asked
	Slots   string // slot ranges served, for a primary
}

// Topology is the cluster as the running node asked first sees it.
func (c *RedisCluster) Topology(ctx context.Context) ([]ClusterNode, error) {
	var lastErr error
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		out, err := c.cli(ctx, n.Addr, "cluster", "nodes")
		if err != nil {
			lastErr = err
			continue
		}
		var nodes []ClusterNode
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 8 {
				continue
			}
			addr, _, _ := strings.Cut(f[1], "@")
			cn := ClusterNode{Index: -1, ID: f[0], Primary: strings.Contains(f[2], "master"),
				Failed: strings.Contains(f[2], "fail"), Slots: strings.Join(f[8:], " ")}
			for i, m := range c.Nodes {
				if m.Addr == addr {
					cn.Index = i
				}
			}
			nodes = append(nodes, cn)
		}
		return nodes, nil
	}
	if lastErr == nil {
		lastErr = errors.New("no node is running")
	}
	return nil, lastErr
}

// Primaries are the indices of the nodes that serve slots and are not marked failed.
func (c *RedisCluster) Primaries(ctx context.Context) ([]int, error) {
	nodes, err := c.Topology(ctx)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, n := range nodes {
		if n.Primary && !n.Failed && n.Slots != "" && n.Index >= 0 {
			out = append(out, n.Index)
		}
	}
	return out, nil
}

// KeyCount is the number of keys node i holds (DBSIZE).
func (c *RedisCluster) KeyCount(ctx context.Context, i int) (int, error) {
	out, err := c.cli(ctx, c.Nodes[i].Addr, "dbsize")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(out))
}

// WaitHealthy returns once every running node reports cluster_state:ok, that is, every slot
// has a reachable primary in its view.
func (c *RedisCluster) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		bad := ""
		for i, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			out, err := c.cli(ctx, n.Addr, "cluster", "info")
			if err != nil || !strings.Contains(out, "cluster_state:ok") {
				bad = fmt.Sprintf("node %d (%s) not ok: %v", i, n.Addr, err)
				break
			}
		}
		if bad == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis cluster not healthy after %s: %s", timeout, bad)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *RedisCluster) cli(ctx context.Context, addr string, args ...string) (string, error) {
	host, port, _ := strings.Cut(addr, ":")
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, "redis-cli", append([]string{"-h", host, "-p", port}, args...)...).Output()
	return string(out), err
}

// Stop terminates every node and removes its data.
func (c *RedisCluster) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}
