"""GAM as YOLOAir writes it: grouped, shuffled, no channel sigmoid."""

from torch import nn


class GAMAttention(nn.Module):  # YOLOAir: grouped, shuffled, no channel sigmoid
    def __init__(self, c1, c2, group=True, rate=4):
        super().__init__()
        self.channel_attention = nn.Sequential(nn.Linear(c1, int(c1 / rate)), nn.ReLU(inplace=True),
                                               nn.Linear(int(c1 / rate), c1))
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(c1, c1 // rate, kernel_size=7, padding=3, groups=rate), nn.BatchNorm2d(int(c1 / rate)),
            nn.ReLU(inplace=True), nn.Conv2d(c1 // rate, c2, kernel_size=7, padding=3, groups=rate), nn.BatchNorm2d(c2))

    def forward(self, x):
        b, c, h, w = x.shape
        att = self.channel_attention(x.permute(0, 2, 3, 1).view(b, -1, c)).view(b, h, w, c)
        x = x * att.permute(0, 3, 1, 2)
        s = self.spatial_attention(x).sigmoid()
        s = s.view(b, 4, c // 4, h, w).permute(0, 2, 1, 3, 4).contiguous().view(b, c, h, w)
        return x * s
