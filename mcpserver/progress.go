package mcpserver

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/internal/outqueue"
)

// maxProgressMessage bounds the text of one progress notification.
const maxProgressMessage = 64 << 10

// MetaStream is the _meta key of a progress notification that names the
// stream ("stdout" or "stderr") its message came from.
const MetaStream = "berth.dev/stream"

// startProgress streams an execution's output to the client as progress
// notifications on the tool call's own response stream (through an
// outqueue, so a slow client does not hold up the execution). The
// progress value is the number of output bytes sent so far (it only
// grows); the message is the chunk of output. It returns nil when the
// request has no progress token (a nil queue's OnEvent is nil).
func startProgress(ctx context.Context, req *mcp.CallToolRequest) *outqueue.Queue {
	token := req.Params.GetProgressToken()
	if token == nil || req.Session == nil {
		return nil
	}
	var sent float64
	return outqueue.Start(maxProgressMessage, func(stream, text string) error {
		sent += float64(len(text))
		// A client that went away gets no more; the execution goes on.
		return req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
			Meta:          mcp.Meta{MetaStream: stream},
			ProgressToken: token,
			Progress:      sent,
			Message:       text,
		})
	})
}
