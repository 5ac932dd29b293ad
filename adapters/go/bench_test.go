package flowbridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"testing"
)

// BenchmarkServe measures requests per second through ServeIO over OS pipes, with
// up to 64 requests in flight, as the bridge would keep them.
func BenchmarkServe(b *testing.B) {
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	p := Plugin{Execute: func(ctx context.Context, t *Request) (any, error) {
		return Map{{"i", t.ID}, {"n", len(t.RawConfig)}}, nil
	}}
	done := make(chan error, 1)
	go func() { done <- ServeIO(p, inR, outW); outW.Close() }()

	frame := func(kv Map) []byte {
		var enc encoder
		body, _ := enc.appendValue(nil, kv, 0)
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
	}
	w := bufio.NewWriter(inW)
	w.Write(frame(Map{{"type", "hello"}, {"protocols", []any{1}}, {"plugin", "bench"}}))
	w.Flush()
	r := bufio.NewReader(outR)
	if _, err := readFrame(r, DefaultMaxFrame); err != nil {
		b.Fatal(err)
	}
	config := []byte(`{"i":1,"payload":"abc"}`)
	window := make(chan struct{}, 64)
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; i++ {
			window <- struct{}{}
			w.Write(frame(Map{{"type", "task"}, {"id", i}, {"config", config}, {"element_job", "ej"}, {"timeout_ms", 60000}}))
			if len(window) == cap(window) || i == b.N-1 {
				w.Flush()
			}
		}
		w.Write(frame(Map{{"type", "stop"}}))
		w.Flush()
	}()
	for i := 0; i < b.N; i++ {
		if _, err := readFrame(r, DefaultMaxFrame); err != nil {
			b.Fatal(err)
		}
		<-window
	}
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkChildProcess measures requests per second to a real child process (this
// test binary's handler, which parses each JSON config) over real pipes.
func BenchmarkChildProcess(b *testing.B) {
	br := startTestChild(b)
	br.hello(DefaultMaxFrame)
	br.ready()
	config := []byte(`{"i":1,"payload":"温度传感器"}`)
	var enc encoder
	body, _ := enc.appendValue(nil, Map{{"type", "task"}, {"id", 0}, {"config", config}, {"element_job", "ej"}}, 0)
	frame := append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
	idAt := bytes.Index(frame, []byte{0xa2, 'i', 'd', 0x00}) + 3
	window := make(chan struct{}, 64)
	b.ResetTimer()
	go func() {
		w := bufio.NewWriter(br.stdin)
		for i := 0; i < b.N; i++ {
			window <- struct{}{}
			f := append(append(append([]byte{}, frame[:idAt]...), appendUint(nil, uint64(i))...), frame[idAt+1:]...)
			binary.BigEndian.PutUint32(f, uint32(len(f)-4))
			w.Write(f)
			if len(window) == cap(window) || i == b.N-1 {
				w.Flush()
			}
		}
	}()
	for i := 0; i < b.N; i++ {
		if m := br.next(); m.typ != "result" {
			b.Fatalf("got %s %q", m.typ, m.message)
		}
		<-window
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	br.stdin.Close()
	br.waitExit()
}
