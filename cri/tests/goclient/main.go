// Command goclient drives Gantry's CRI streaming server with client-go's own
// remotecommand and port-forward clients (SPDY via moby/spdystream, WebSocket via
// gorilla), the code crictl, the kubelet and kubectl use. Used by cri/tests/streaming_go.rs.
//
// Usage: goclient exec-spdy|exec-ws|exec-tty-spdy|attach-spdy|portforward-spdy|portforward-ws URL
// It prints one JSON object: stdout, stderr, exit code or error, echoed bytes.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
)

type result struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exitCode"`
	Error    string `json:"error,omitempty"`
	Echo     string `json:"echo,omitempty"`
}

type oneSize struct{ sent bool }

func (s *oneSize) Next() *remotecommand.TerminalSize {
	if s.sent {
		time.Sleep(time.Hour)
		return nil
	}
	s.sent = true
	return &remotecommand.TerminalSize{Width: 132, Height: 43}
}

func main() {
	mode, rawURL := os.Args[1], os.Args[2]
	u, err := url.Parse(rawURL)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := &rest.Config{}
	var res result
	switch mode {
	case "exec-spdy", "exec-ws", "exec-tty-spdy", "attach-spdy":
		var exec remotecommand.Executor
		if mode == "exec-ws" {
			exec, err = remotecommand.NewWebSocketExecutor(cfg, "GET", rawURL)
		} else {
			exec, err = remotecommand.NewSPDYExecutor(cfg, "POST", u)
		}
		if err != nil {
			panic(err)
		}
		var stdout, stderr bytes.Buffer
		opts := remotecommand.StreamOptions{Stdin: strings.NewReader("from client-go"), Stdout: &stdout}
		if mode == "exec-tty-spdy" {
			opts.Tty = true
			opts.TerminalSizeQueue = &oneSize{}
			opts.Stdin = nil
		} else if mode != "attach-spdy" {
			opts.Stderr = &stderr
		}
		err = exec.StreamWithContext(ctx, opts)
		res.Stdout, res.Stderr = stdout.String(), stderr.String()
		var exitErr utilexec.CodeExitError
		if errors.As(err, &exitErr) {
			res.ExitCode = exitErr.Code
		} else if err != nil {
			res.Error = err.Error()
		}
	case "portforward-spdy", "portforward-ws":
		var dialer httpstream.Dialer
		if mode == "portforward-ws" {
			// SPDY tunnelled in WebSocket, as `crictl port-forward -r websocket`.
			dialer, err = portforward.NewSPDYOverWebsocketDialer(u, cfg)
		} else {
			tr, upgrader, rtErr := spdy.RoundTripperFor(cfg)
			if rtErr != nil {
				panic(rtErr)
			}
			dialer = spdy.NewDialer(upgrader, &http.Client{Transport: tr}, "POST", u)
		}
		if err != nil {
			panic(err)
		}
		stop, ready := make(chan struct{}), make(chan struct{})
		fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:8080", "0:1"}, stop, ready, io.Discard, io.Discard)
		if err != nil {
			panic(err)
		}
		done := make(chan error, 1)
		go func() { done <- fw.ForwardPorts() }()
		select {
		case <-ready:
		case err := <-done:
			res.Error = fmt.Sprint("forward: ", err)
		}
		if res.Error == "" {
			ports, _ := fw.GetPorts()
			for round := 0; round < 2; round++ {
				conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local))
				if err != nil {
					panic(err)
				}
				fmt.Fprintf(conn, "ping%d", round)
				conn.(*net.TCPConn).CloseWrite()
				echo, _ := io.ReadAll(conn)
				conn.Close()
				res.Echo += string(echo)
			}
			// The refused port: the error ends the forwarding session, as upstream.
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[1].Local))
			if err == nil {
				io.ReadAll(conn)
				conn.Close()
			}
			select {
			case err := <-done:
				res.Error = fmt.Sprint(err)
			case <-time.After(10 * time.Second):
				res.Error = "forwarding did not end after the refused port"
				close(stop)
			}
		}
	default:
		panic("unknown mode " + mode)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}
