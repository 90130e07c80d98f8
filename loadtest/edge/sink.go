package main

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
)

// sqsSink acknowledges SendMessageBatch calls without storing anything. It stands in for a
// remote SQS in the "edge only" phase, to show what the edge itself sustains when the queue's
// CPU is not on the same two cores; the real chain is measured against ElasticMQ.
type sqsSink struct {
	URL      string
	received atomic.Int64
}

func startSink() (*sqsSink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sqsSink{URL: "http://" + l.Addr().String()}
	var ids atomic.Int64
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Entries []struct {
				ID          string `json:"Id"`
				MessageBody string
			}
		}
		if r.Header.Get("X-Amz-Target") != "AmazonSQS.SendMessageBatch" || json.NewDecoder(r.Body).Decode(&in) != nil {
			http.Error(w, "only SendMessageBatch", http.StatusBadRequest)
			return
		}
		type ok struct {
			ID               string `json:"Id"`
			MessageID        string `json:"MessageId"`
			MD5OfMessageBody string
		}
		out := struct {
			Successful []ok
			Failed     []struct{}
		}{Failed: []struct{}{}}
		for _, e := range in.Entries {
			sum := md5.Sum([]byte(e.MessageBody))
			out.Successful = append(out.Successful, ok{ID: e.ID, MessageID: fmt.Sprintf("sink-%d", ids.Add(1)),
				MD5OfMessageBody: hex.EncodeToString(sum[:])})
		}
		s.received.Add(int64(len(in.Entries)))
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		b, _ := json.Marshal(out)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	}))
	return s, nil
}
