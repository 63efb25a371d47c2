from google.protobuf import any_pb2 as _any_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UpstreamMessage(_message.Message):
    __slots__ = (
        "send_to_group_message",
        "event_message",
        "join_group_message",
        "leave_group_message",
        "sequence_ack_message",
        "ping_message",
        "stream_data_message",
        "stream_end_message",
        "set_group_state_message",
        "subscribe_group_state_message",
        "unsubscribe_group_state_message",
    )
    class SendToGroupMessage(_message.Message):
        __slots__ = ("group", "ack_id", "data", "no_echo", "ttl_seconds", "metadata", "stream")
        class MetadataEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

        GROUP_FIELD_NUMBER: _ClassVar[int]
        ACK_ID_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        NO_ECHO_FIELD_NUMBER: _ClassVar[int]
        TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
        METADATA_FIELD_NUMBER: _ClassVar[int]
        STREAM_FIELD_NUMBER: _ClassVar[int]
        group: str
        ack_id: int
        data: MessageData
        no_echo: bool
        ttl_seconds: int
        metadata: _containers.ScalarMap[str, str]
        stream: UpstreamMessage.StreamStartInfo
        def __init__(
            self,
            group: _Optional[str] = ...,
            ack_id: _Optional[int] = ...,
            data: _Optional[_Union[MessageData, _Mapping]] = ...,
            no_echo: _Optional[bool] = ...,
            ttl_seconds: _Optional[int] = ...,
            metadata: _Optional[_Mapping[str, str]] = ...,
            stream: _Optional[_Union[UpstreamMessage.StreamStartInfo, _Mapping]] = ...,
        ) -> None: ...

    class EventMessage(_message.Message):
        __slots__ = ("event", "data", "ack_id", "metadata", "stream")
        class MetadataEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

        EVENT_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        ACK_ID_FIELD_NUMBER: _ClassVar[int]
        METADATA_FIELD_NUMBER: _ClassVar[int]
        STREAM_FIELD_NUMBER: _ClassVar[int]
        event: str
        data: MessageData
        ack_id: int
        metadata: _containers.ScalarMap[str, str]
        stream: UpstreamMessage.StreamStartInfo
        def __init__(
            self,
            event: _Optional[str] = ...,
            data: _Optional[_Union[MessageData, _Mapping]] = ...,
            ack_id: _Optional[int] = ...,
            metadata: _Optional[_Mapping[str, str]] = ...,
            stream: _Optional[_Union[UpstreamMessage.StreamStartInfo, _Mapping]] = ...,
        ) -> None: ...

    class JoinGroupMessage(_message.Message):
        __slots__ = ("group", "ack_id")
        GROUP_FIELD_NUMBER: _ClassVar[int]
        ACK_ID_FIELD_NUMBER: _ClassVar[int]
        group: str
        ack_id: int
        def __init__(self, group: _Optional[str] = ..., ack_id: _Optional[int] = ...) -> None: ...

    class LeaveGroupMessage(_message.Message):
        __slots__ = ("group", "ack_id")
        GROUP_FIELD_NUMBER: _ClassVar[int]
        ACK_ID_FIELD_NUMBER: _ClassVar[int]
        group: str
        ack_id: int
        def __init__(self, group: _Optional[str] = ..., ack_id: _Optional[int] = ...) -> None: ...

    class SequenceAckMessage(_message.Message):
        __slots__ = ("sequence_id",)
        SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
        sequence_id: int
        def __init__(self, sequence_id: _Optional[int] = ...) -> None: ...

    class PingMessage(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...

    class StreamStartInfo(_message.Message):
        __slots__ = ("stream_id", "idle_timeout_ms")
        STREAM_ID_FIELD_NUMBER: _ClassVar[int]
        IDLE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
        stream_id: str
        idle_timeout_ms: int
        def __init__(
            self, stream_id: _Optional[str] = ..., idle_timeout_ms: _Optional[int] = ...
        ) -> None: ...

    class StreamDataMessage(_message.Message):
        __slots__ = ("stream_id", "stream_sequence_id", "data")
        STREAM_ID_FIELD_NUMBER: _ClassVar[int]
        STREAM_SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        stream_id: str
        stream_sequence_id: int
        data: MessageData
        def __init__(
            self,
            stream_id: _Optional[str] = ...,
            stream_sequence_id: _Optional[int] = ...,
            data: _Optional[_Union[MessageData, _Mapping]] = ...,
        ) -> None: ...

    class StreamEndMessage(_message.Message):
        __slots__ = ("stream_id", "error")
        class StreamEndError(_message.Message):
            __slots__ = ("message", "user_error_code")
            MESSAGE_FIELD_NUMBER: _ClassVar[int]
            USER_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
            message: str
            user_error_code: str
            def __init__(
                self, message: _Optional[str] = ..., user_error_code: _Optional[str] = ...
            ) -> None: ...

        STREAM_ID_FIELD_NUMBER: _ClassVar[int]
        ERROR_FIELD_NUMBER: _ClassVar[int]
        stream_id: str
        error: UpstreamMessage.StreamEndMessage.StreamEndError
        def __init__(
            self,
            stream_id: _Optional[str] = ...,
            error: _Optional[
                _Union[UpstreamMessage.StreamEndMessage.StreamEndError, _Mapping]
            ] = ...,
        ) -> None: ...

    class SetGroupStateMessage(_message.Message):
        __slots__ = ("group", "ack_id", "state")
        GROUP_FIELD_NUMBER: _ClassVar[int]
        ACK_ID_FIELD_NUMBER: _ClassVar[int]
        STATE_FIELD_NUMBER: _ClassVar[int]
        group: str
        ack_id: int
        state: GroupStateItem.GroupState
        def __init__(
            self,
            group: _Optional[str] = ...,
            ack_id: _Optional[int] = ...,
            state: _Optional[_Union[GroupStateItem.GroupState, _Mapping]] = ...,
        ) -> None: ...

    class SubscribeGroupStateMessage(_message.Message):
        __slots__ = ("group", "ack_id")
        GROUP_FIELD_NUMBER: _ClassVar[int]
        ACK_ID_FIELD_NUMBER: _ClassVar[int]
        group: str
        ack_id: int
        def __init__(self, group: _Optional[str] = ..., ack_id: _Optional[int] = ...) -> None: ...

    class UnsubscribeGroupStateMessage(_message.Message):
        __slots__ = ("group", "ack_id")
        GROUP_FIELD_NUMBER: _ClassVar[int]
        ACK_ID_FIELD_NUMBER: _ClassVar[int]
        group: str
        ack_id: int
        def __init__(self, group: _Optional[str] = ..., ack_id: _Optional[int] = ...) -> None: ...

    SEND_TO_GROUP_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EVENT_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    JOIN_GROUP_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEAVE_GROUP_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ACK_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PING_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STREAM_DATA_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STREAM_END_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SET_GROUP_STATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_GROUP_STATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_GROUP_STATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    send_to_group_message: UpstreamMessage.SendToGroupMessage
    event_message: UpstreamMessage.EventMessage
    join_group_message: UpstreamMessage.JoinGroupMessage
    leave_group_message: UpstreamMessage.LeaveGroupMessage
    sequence_ack_message: UpstreamMessage.SequenceAckMessage
    ping_message: UpstreamMessage.PingMessage
    stream_data_message: UpstreamMessage.StreamDataMessage
    stream_end_message: UpstreamMessage.StreamEndMessage
    set_group_state_message: UpstreamMessage.SetGroupStateMessage
    subscribe_group_state_message: UpstreamMessage.SubscribeGroupStateMessage
    unsubscribe_group_state_message: UpstreamMessage.UnsubscribeGroupStateMessage
    def __init__(
        self,
        send_to_group_message: _Optional[
            _Union[UpstreamMessage.SendToGroupMessage, _Mapping]
        ] = ...,
        event_message: _Optional[_Union[UpstreamMessage.EventMessage, _Mapping]] = ...,
        join_group_message: _Optional[_Union[UpstreamMessage.JoinGroupMessage, _Mapping]] = ...,
        leave_group_message: _Optional[_Union[UpstreamMessage.LeaveGroupMessage, _Mapping]] = ...,
        sequence_ack_message: _Optional[_Union[UpstreamMessage.SequenceAckMessage, _Mapping]] = ...,
        ping_message: _Optional[_Union[UpstreamMessage.PingMessage, _Mapping]] = ...,
        stream_data_message: _Optional[_Union[UpstreamMessage.StreamDataMessage, _Mapping]] = ...,
        stream_end_message: _Optional[_Union[UpstreamMessage.StreamEndMessage, _Mapping]] = ...,
        set_group_state_message: _Optional[
            _Union[UpstreamMessage.SetGroupStateMessage, _Mapping]
        ] = ...,
        subscribe_group_state_message: _Optional[
            _Union[UpstreamMessage.SubscribeGroupStateMessage, _Mapping]
        ] = ...,
        unsubscribe_group_state_message: _Optional[
            _Union[UpstreamMessage.UnsubscribeGroupStateMessage, _Mapping]
        ] = ...,
    ) -> None: ...

class DownstreamMessage(_message.Message):
    __slots__ = (
        "ack_message",
        "data_message",
        "system_message",
        "pong_message",
        "stream_ack_message",
        "stream_nack_message",
        "stream_closed_message",
        "group_state_update_message",
        "group_state_snapshot_message",
    )
    class AckMessage(_message.Message):
        __slots__ = ("ack_id", "success", "error")
        class ErrorMessage(_message.Message):
            __slots__ = ("name", "message")
            NAME_FIELD_NUMBER: _ClassVar[int]
            MESSAGE_FIELD_NUMBER: _ClassVar[int]
            name: str
            message: str
            def __init__(
                self, name: _Optional[str] = ..., message: _Optional[str] = ...
            ) -> None: ...

        ACK_ID_FIELD_NUMBER: _ClassVar[int]
        SUCCESS_FIELD_NUMBER: _ClassVar[int]
        ERROR_FIELD_NUMBER: _ClassVar[int]
        ack_id: int
        success: bool
        error: DownstreamMessage.AckMessage.ErrorMessage
        def __init__(
            self,
            ack_id: _Optional[int] = ...,
            success: _Optional[bool] = ...,
            error: _Optional[_Union[DownstreamMessage.AckMessage.ErrorMessage, _Mapping]] = ...,
        ) -> None: ...

    class DataMessage(_message.Message):
        __slots__ = ("group", "data", "sequence_id", "metadata", "stream")
        class MetadataEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

        FROM_FIELD_NUMBER: _ClassVar[int]
        GROUP_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
        METADATA_FIELD_NUMBER: _ClassVar[int]
        STREAM_FIELD_NUMBER: _ClassVar[int]
        group: str
        data: MessageData
        sequence_id: int
        metadata: _containers.ScalarMap[str, str]
        stream: StreamInfo
        def __init__(
            self,
            group: _Optional[str] = ...,
            data: _Optional[_Union[MessageData, _Mapping]] = ...,
            sequence_id: _Optional[int] = ...,
            metadata: _Optional[_Mapping[str, str]] = ...,
            stream: _Optional[_Union[StreamInfo, _Mapping]] = ...,
            **kwargs,
        ) -> None: ...

    class SystemMessage(_message.Message):
        __slots__ = ("connected_message", "disconnected_message")
        class ConnectedMessage(_message.Message):
            __slots__ = ("connection_id", "user_id", "reconnection_token")
            CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
            USER_ID_FIELD_NUMBER: _ClassVar[int]
            RECONNECTION_TOKEN_FIELD_NUMBER: _ClassVar[int]
            connection_id: str
            user_id: str
            reconnection_token: str
            def __init__(
                self,
                connection_id: _Optional[str] = ...,
                user_id: _Optional[str] = ...,
                reconnection_token: _Optional[str] = ...,
            ) -> None: ...

        class DisconnectedMessage(_message.Message):
            __slots__ = ("reason",)
            REASON_FIELD_NUMBER: _ClassVar[int]
            reason: str
            def __init__(self, reason: _Optional[str] = ...) -> None: ...

        CONNECTED_MESSAGE_FIELD_NUMBER: _ClassVar[int]
        DISCONNECTED_MESSAGE_FIELD_NUMBER: _ClassVar[int]
        connected_message: DownstreamMessage.SystemMessage.ConnectedMessage
        disconnected_message: DownstreamMessage.SystemMessage.DisconnectedMessage
        def __init__(
            self,
            connected_message: _Optional[
                _Union[DownstreamMessage.SystemMessage.ConnectedMessage, _Mapping]
            ] = ...,
            disconnected_message: _Optional[
                _Union[DownstreamMessage.SystemMessage.DisconnectedMessage, _Mapping]
            ] = ...,
        ) -> None: ...

    class PongMessage(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...

    class StreamAckMessage(_message.Message):
        __slots__ = ("stream_id", "expected_sequence_id")
        STREAM_ID_FIELD_NUMBER: _ClassVar[int]
        EXPECTED_SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
        stream_id: str
        expected_sequence_id: int
        def __init__(
            self, stream_id: _Optional[str] = ..., expected_sequence_id: _Optional[int] = ...
        ) -> None: ...

    class StreamNackMessage(_message.Message):
        __slots__ = ("stream_id", "name", "message", "expected_sequence_id")
        STREAM_ID_FIELD_NUMBER: _ClassVar[int]
        NAME_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        EXPECTED_SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
        stream_id: str
        name: str
        message: str
        expected_sequence_id: int
        def __init__(
            self,
            stream_id: _Optional[str] = ...,
            name: _Optional[str] = ...,
            message: _Optional[str] = ...,
            expected_sequence_id: _Optional[int] = ...,
        ) -> None: ...

    class StreamClosedMessage(_message.Message):
        __slots__ = ("stream_id", "error")
        class StreamClosedError(_message.Message):
            __slots__ = ("name", "message")
            NAME_FIELD_NUMBER: _ClassVar[int]
            MESSAGE_FIELD_NUMBER: _ClassVar[int]
            name: str
            message: str
            def __init__(
                self, name: _Optional[str] = ..., message: _Optional[str] = ...
            ) -> None: ...

        STREAM_ID_FIELD_NUMBER: _ClassVar[int]
        ERROR_FIELD_NUMBER: _ClassVar[int]
        stream_id: str
        error: DownstreamMessage.StreamClosedMessage.StreamClosedError
        def __init__(
            self,
            stream_id: _Optional[str] = ...,
            error: _Optional[
                _Union[DownstreamMessage.StreamClosedMessage.StreamClosedError, _Mapping]
            ] = ...,
        ) -> None: ...

    class GroupStateUpdateMessage(_message.Message):
        __slots__ = ("group", "items", "sequence_id")
        GROUP_FIELD_NUMBER: _ClassVar[int]
        ITEMS_FIELD_NUMBER: _ClassVar[int]
        SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
        group: str
        items: _containers.RepeatedCompositeFieldContainer[GroupStateItem]
        sequence_id: int
        def __init__(
            self,
            group: _Optional[str] = ...,
            items: _Optional[_Iterable[_Union[GroupStateItem, _Mapping]]] = ...,
            sequence_id: _Optional[int] = ...,
        ) -> None: ...

    class GroupStateSnapshotMessage(_message.Message):
        __slots__ = ("group", "items", "sequence_id")
        GROUP_FIELD_NUMBER: _ClassVar[int]
        ITEMS_FIELD_NUMBER: _ClassVar[int]
        SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
        group: str
        items: _containers.RepeatedCompositeFieldContainer[GroupStateItem]
        sequence_id: int
        def __init__(
            self,
            group: _Optional[str] = ...,
            items: _Optional[_Iterable[_Union[GroupStateItem, _Mapping]]] = ...,
            sequence_id: _Optional[int] = ...,
        ) -> None: ...

    ACK_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PONG_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STREAM_ACK_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STREAM_NACK_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STREAM_CLOSED_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GROUP_STATE_UPDATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GROUP_STATE_SNAPSHOT_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ack_message: DownstreamMessage.AckMessage
    data_message: DownstreamMessage.DataMessage
    system_message: DownstreamMessage.SystemMessage
    pong_message: DownstreamMessage.PongMessage
    stream_ack_message: DownstreamMessage.StreamAckMessage
    stream_nack_message: DownstreamMessage.StreamNackMessage
    stream_closed_message: DownstreamMessage.StreamClosedMessage
    group_state_update_message: DownstreamMessage.GroupStateUpdateMessage
    group_state_snapshot_message: DownstreamMessage.GroupStateSnapshotMessage
    def __init__(
        self,
        ack_message: _Optional[_Union[DownstreamMessage.AckMessage, _Mapping]] = ...,
        data_message: _Optional[_Union[DownstreamMessage.DataMessage, _Mapping]] = ...,
        system_message: _Optional[_Union[DownstreamMessage.SystemMessage, _Mapping]] = ...,
        pong_message: _Optional[_Union[DownstreamMessage.PongMessage, _Mapping]] = ...,
        stream_ack_message: _Optional[_Union[DownstreamMessage.StreamAckMessage, _Mapping]] = ...,
        stream_nack_message: _Optional[_Union[DownstreamMessage.StreamNackMessage, _Mapping]] = ...,
        stream_closed_message: _Optional[
            _Union[DownstreamMessage.StreamClosedMessage, _Mapping]
        ] = ...,
        group_state_update_message: _Optional[
            _Union[DownstreamMessage.GroupStateUpdateMessage, _Mapping]
        ] = ...,
        group_state_snapshot_message: _Optional[
            _Union[DownstreamMessage.GroupStateSnapshotMessage, _Mapping]
        ] = ...,
    ) -> None: ...

class StreamInfo(_message.Message):
    __slots__ = ("stream_id", "stream_sequence_id", "end_of_stream", "error")
    class StreamError(_message.Message):
        __slots__ = ("name", "message", "user_error_code")
        NAME_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        USER_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
        name: str
        message: str
        user_error_code: str
        def __init__(
            self,
            name: _Optional[str] = ...,
            message: _Optional[str] = ...,
            user_error_code: _Optional[str] = ...,
        ) -> None: ...

    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    END_OF_STREAM_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    stream_sequence_id: int
    end_of_stream: bool
    error: StreamInfo.StreamError
    def __init__(
        self,
        stream_id: _Optional[str] = ...,
        stream_sequence_id: _Optional[int] = ...,
        end_of_stream: _Optional[bool] = ...,
        error: _Optional[_Union[StreamInfo.StreamError, _Mapping]] = ...,
    ) -> None: ...

class GroupStateItem(_message.Message):
    __slots__ = ("connection_id", "user_id", "state", "updated_at")
    class GroupState(_message.Message):
        __slots__ = ("entries",)
        class EntriesEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

        ENTRIES_FIELD_NUMBER: _ClassVar[int]
        entries: _containers.ScalarMap[str, str]
        def __init__(self, entries: _Optional[_Mapping[str, str]] = ...) -> None: ...

    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    user_id: str
    state: GroupStateItem.GroupState
    updated_at: int
    def __init__(
        self,
        connection_id: _Optional[str] = ...,
        user_id: _Optional[str] = ...,
        state: _Optional[_Union[GroupStateItem.GroupState, _Mapping]] = ...,
        updated_at: _Optional[int] = ...,
    ) -> None: ...

class MessageData(_message.Message):
    __slots__ = ("text_data", "binary_data", "protobuf_data", "json_data")
    TEXT_DATA_FIELD_NUMBER: _ClassVar[int]
    BINARY_DATA_FIELD_NUMBER: _ClassVar[int]
    PROTOBUF_DATA_FIELD_NUMBER: _ClassVar[int]
    JSON_DATA_FIELD_NUMBER: _ClassVar[int]
    text_data: str
    binary_data: bytes
    protobuf_data: _any_pb2.Any
    json_data: str
    def __init__(
        self,
        text_data: _Optional[str] = ...,
        binary_data: _Optional[bytes] = ...,
        protobuf_data: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...,
        json_data: _Optional[str] = ...,
    ) -> None: ...
