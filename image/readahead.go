package image

import (
	"io"
	"sync"
)

// readAhead reads r in a goroutine of its own, up to 8 chunks ahead, so
// that decompressing a layer and writing its files overlap.
type readAhead struct {
	chunks chan []byte
	errc   chan error
	stop   chan struct{}
	once   sync.Once
	cur    []byte
	err    error
	wg     sync.WaitGroup
}

const chunkSize = 256 << 10

func newReadAhead(r io.Reader) *readAhead {
	ra := &readAhead{chunks: make(chan []byte, 8), errc: make(chan error, 1), stop: make(chan struct{})}
	ra.wg.Add(1)
	go func() {
		defer ra.wg.Done()
		defer close(ra.chunks)
		for {
			buf := make([]byte, chunkSize)
			n, err := io.ReadFull(r, buf)
			if n > 0 {
				select {
				case ra.chunks <- buf[:n]:
				case <-ra.stop:
					return
				}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return
			}
			if err != nil {
				ra.errc <- err
				return
			}
		}
	}()
	return ra
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.err != nil {
			return 0, ra.err
		}
		c, ok := <-ra.chunks
		if !ok {
			select {
			case ra.err = <-ra.errc:
			default:
				ra.err = io.EOF
			}
			continue
		}
		ra.cur = c
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// Close stops the goroutine and waits for it; it does not close r.
func (ra *readAhead) Close() error {
	ra.once.Do(func() { close(ra.stop) })
	ra.wg.Wait()
	return nil
}
