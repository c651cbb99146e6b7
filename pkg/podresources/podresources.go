// Package podresources asks the kubelet which device-plugin devices a pod
// was given (the pod-resources API on the kubelet's unix socket), so that a
// NAD annotated with k8s.v1.cni.cncf.io/resourceName gets its device as
// runtimeConfig deviceID, as Multus does.
package podresources

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// DefaultSocket is the kubelet's pod-resources socket.
const DefaultSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// Client queries one kubelet socket. It dials per query: the lookup is
// needed only for pods on networks backed by device plugins.
//
// The one call it makes, List, is spoken directly: a gRPC unary call is an
// HTTP/2 POST of a length-prefixed protobuf message answered with one and a
// grpc-status trailer, which net/http does without TLS (h2c), and the
// answer's few fields are read with protowire. The gRPC library and the
// kubelet's generated stubs would add some 60 packages and ~3 MiB to
// knitd's resident memory for this. The tests check the client against a
// real gRPC server.
type Client struct {
	Socket  string
	Timeout time.Duration
}

// DeviceIDs returns the device IDs allocated to the pod's containers, per
// resource name, in the kubelet's order (containers in order, devices in
// allocation order).
func (c *Client) DeviceIDs(ctx context.Context, namespace, name string) (map[string][]string, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg, err := c.unary(ctx, "/v1.PodResourcesLister/List", nil) // ListPodResourcesRequest is empty
	if err != nil {
		return nil, fmt.Errorf("kubelet pod-resources %s: List: %w", c.Socket, err)
	}
	out := map[string][]string{}
	if err := devicesOf(msg, namespace, name, out); err != nil {
		return nil, fmt.Errorf("kubelet pod-resources %s: List answer: %w", c.Socket, err)
	}
	return out, nil
}

// Allocator hands out a pod's devices to attachments: each NAD using a
// resource takes the next unused device of it.
type Allocator struct {
	devices map[string][]string
	next    map[string]int
}

// NewAllocator wraps a DeviceIDs answer.
func NewAllocator(devices map[string][]string) *Allocator {
	return &Allocator{devices: devices, next: map[string]int{}}
}

// Next returns the next device of resource, "" when none is left.
func (a *Allocator) Next(resource string) string {
	ids := a.devices[resource]
	i := a.next[resource]
	if i >= len(ids) {
		return ""
	}
	a.next[resource] = i + 1
	return ids[i]
}

// maxAnswer bounds the List answer (every pod on the node).
const maxAnswer = 64 << 20

// unary makes one gRPC unary call on the socket and returns the answer's
// message.
func (c *Client) unary(ctx context.Context, method string, req []byte) ([]byte, error) {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos, DisableCompression: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", c.Socket)
		}}
	defer tr.CloseIdleConnections()
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(req))) // not compressed, length
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost"+method, bytes.NewReader(append(frame, req...)))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/grpc")
	hreq.Header.Set("TE", "trailers")
	resp, err := tr.RoundTrip(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+6))
	if err != nil {
		return nil, err
	}
	if len(body) > maxAnswer+5 {
		return nil, fmt.Errorf("answer over %d MiB", maxAnswer>>20)
	}
	if err := grpcStatus(resp); err != nil {
		return nil, err
	}
	if len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
		return nil, fmt.Errorf("malformed gRPC answer (%d bytes)", len(body))
	}
	return body[5:], nil
}

// grpcStatus turns the call's grpc-status (a trailer, or a header when the
// server answered with headers only) into an error.
func grpcStatus(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP status %s", resp.Status)
	}
	st, msg := resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	if st == "" {
		st, msg = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	if st == "0" {
		return nil
	}
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	if st == "" {
		return errors.New("answer without grpc-status")
	}
	return fmt.Errorf("gRPC status %s: %s", st, msg)
}

// devicesOf adds the devices of pod namespace/name in a
// ListPodResourcesResponse (field 1: PodResources) to out.
func devicesOf(msg []byte, namespace, name string, out map[string][]string) error {
	return eachBytes(msg, func(num protowire.Number, pod []byte) error {
		if num != 1 {
			return nil
		}
		var pn, pns string
		var ctrs [][]byte
		err := eachBytes(pod, func(num protowire.Number, v []byte) error {
			switch num { // PodResources: name 1, namespace 2, containers 3
			case 1:
				pn = string(v)
			case 2:
				pns = string(v)
			case 3:
				ctrs = append(ctrs, v)
			}
			return nil
		})
		if err != nil || pn != name || pns != namespace {
			return err
		}
		for _, ctr := range ctrs {
			if err := containerDevices(ctr, out); err != nil {
				return err
			}
		}
		return nil
	})
}

// containerDevices reads a ContainerResources' devices (field 2), each a
// ContainerDevices: resource_name 1, device_ids 2 (repeated).
func containerDevices(ctr []byte, out map[string][]string) error {
	return eachBytes(ctr, func(num protowire.Number, dev []byte) error {
		if num != 2 {
			return nil
		}
		var res string
		var ids []string
		err := eachBytes(dev, func(num protowire.Number, v []byte) error {
			switch num {
			case 1:
				res = string(v)
			case 2:
				ids = append(ids, string(v))
			}
			return nil
		})
		if err == nil {
			out[res] = append(out[res], ids...)
		}
		return err
	})
}

// eachBytes calls fn with every length-delimited field of a protobuf
// message, skipping fields of other wire types.
func eachBytes(msg []byte, fn func(protowire.Number, []byte) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, msg)
			if n < 0 {
				return protowire.ParseError(n)
			}
			msg = msg[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
		if err := fn(num, v); err != nil {
			return err
		}
	}
	return nil
}
